"""OpenAI's file objects (the `openai` SDK's FileObject parses them)."""

from __future__ import annotations

import msgspec

from gateway.files.models import StoredFile


class FilePublic(msgspec.Struct):
    id: str
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str = "processed"
    expires_at: int | None = None
    status_details: str | None = None
    object: str = "file"

    @classmethod
    def of(cls, f: StoredFile) -> FilePublic:
        return cls(
            id=f.id,
            bytes=f.bytes,
            created_at=int(f.created_at.timestamp()),
            filename=f.filename,
            purpose=f.purpose,
        )


class FileList(msgspec.Struct):
    data: list[FilePublic]
    has_more: bool = False
    first_id: str | None = None
    last_id: str | None = None
    object: str = "list"


class FileDeleted(msgspec.Struct):
    id: str
    deleted: bool = True
    object: str = "file"
