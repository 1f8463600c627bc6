"""Create an upload, add parts, complete it into a file (md5 checked), cancel it, expire it after an hour."""

from __future__ import annotations

import asyncio
import hashlib
import io
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway import ids, queue
from gateway.errors import InvalidRequest, NotFound, PayloadTooLarge
from gateway.files import service as files
from gateway.files.models import StoredFile
from gateway.files.storage import BlobStore
from gateway.timeutil import utcnow
from gateway.uploads.models import Upload, UploadPart

PART_LIMIT = 64 * 1024 * 1024
LIFETIME = timedelta(hours=1)


class PartsReader(io.RawIOBase):
    """The parts, in order, read as one stream (never joined in memory); md5 of what was read."""

    def __init__(self, paths: list[Path]) -> None:
        self._paths: Iterator[Path] = iter(paths)
        self._current: BinaryIO | None = None
        self.md5 = hashlib.md5(usedforsecurity=False)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while True:
            if self._current is None:
                nxt = next(self._paths, None)
                if nxt is None:
                    return b""
                self._current = nxt.open("rb")
            chunk = self._current.read(size if size and size > 0 else 1 << 20)
            if chunk:
                self.md5.update(chunk)
                return chunk
            self._current.close()
            self._current = None

    def close(self) -> None:
        if self._current is not None:
            self._current.close()
        super().close()


def folder(root: Path, upload_id: str) -> Path:
    return root / upload_id


async def create(
    session: AsyncSession, tenant_id: str, body: dict[str, Any], max_bytes: int, lifetime: timedelta = LIFETIME
) -> Upload:
    purpose = files.check_purpose(body.get("purpose"))
    filename, size, mime = body.get("filename"), body.get("bytes"), body.get("mime_type")
    if not isinstance(filename, str) or not filename or len(filename) > 300:
        raise InvalidRequest("'filename' must be a non-empty string.", param="filename")
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise InvalidRequest("'bytes' must be a positive integer.", param="bytes")
    if size > max_bytes:
        raise PayloadTooLarge(f"Files are limited to {max_bytes} bytes.", param="bytes")
    if not isinstance(mime, str) or not mime:
        raise InvalidRequest("'mime_type' is required.", code="missing_required_parameter", param="mime_type")
    now = utcnow()
    upload = Upload(
        id=ids.new_id("upload_", 24), tenant_id=tenant_id, filename=filename, purpose=purpose, bytes=size,
        mime_type=mime[:200], created_at=now, expires_at=now + lifetime,
    )  # fmt: skip
    session.add(upload)
    await session.flush()
    await queue.enqueue_in(session, queue.EXPIRE_UPLOAD, {"upload_id": upload.id}, delay=lifetime)
    await session.commit()
    return upload


async def get_owned(session: AsyncSession, tenant_id: str, upload_id: str, *, lock: bool = False) -> Upload:
    upload = await session.get(Upload, upload_id, with_for_update=lock)
    if upload is None or upload.tenant_id != tenant_id:
        raise NotFound(f"No upload {upload_id!r}.", code="upload_not_found", param="upload_id")
    return upload


def _pending(upload: Upload) -> None:
    if upload.status != "pending" or upload.expires_at <= utcnow():
        state = "expired" if upload.status == "pending" else upload.status
        raise InvalidRequest(f"Upload {upload.id} is {state}; it takes no more parts.", code="upload_not_pending")


async def add_part(session: AsyncSession, root: Path, tenant_id: str, upload_id: str, source: BinaryIO) -> UploadPart:
    """Store one part (≤ 64 MB); a failed part leaves nothing, so the client just sends it again."""
    _pending(await get_owned(session, tenant_id, upload_id))
    part = UploadPart(id=ids.new_id("part_", 24), upload_id=upload_id, bytes=0)
    target = folder(root, upload_id) / part.id

    def write() -> int:
        target.parent.mkdir(parents=True, exist_ok=True)
        size = 0
        with target.open("wb") as out:
            while chunk := source.read(1 << 20):
                size += len(chunk)
                if size > PART_LIMIT:
                    raise PayloadTooLarge(f"A part is limited to {PART_LIMIT} bytes.", param="data")
                out.write(chunk)
        return size

    try:
        part.bytes = await asyncio.to_thread(write)
        session.add(part)
        await session.commit()
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return part


async def complete(
    session: AsyncSession,
    root: Path,
    store: BlobStore,
    tenant_id: str,
    upload_id: str,
    body: dict[str, Any],
    *,
    max_bytes: int,
    quota_bytes: int,
    tokens: files.TokenCheck | None,
) -> tuple[Upload, StoredFile]:
    """Join the parts in the order given into a file (validated like `POST /v1/files`)."""
    upload = await get_owned(session, tenant_id, upload_id)
    _pending(upload)
    part_ids = body.get("part_ids")
    if not isinstance(part_ids, list) or not part_ids or not all(isinstance(p, str) for p in part_ids):
        raise InvalidRequest("'part_ids' must be a non-empty list of part ids.", param="part_ids")
    if len(set(part_ids)) != len(part_ids):
        raise InvalidRequest("'part_ids' lists a part twice.", param="part_ids")
    parts = {p.id: p for p in (await session.exec(select(UploadPart).where(UploadPart.upload_id == upload_id))).all()}
    unknown = [p for p in part_ids if p not in parts]
    if unknown:
        raise InvalidRequest(f"Unknown part {unknown[0]!r} for upload {upload_id}.", param="part_ids")
    total = sum(parts[p].bytes for p in part_ids)
    if total != upload.bytes:
        raise InvalidRequest(
            f"The parts hold {total} bytes; the upload was created for {upload.bytes}.", param="part_ids"
        )
    md5 = body.get("md5")
    reader = PartsReader([folder(root, upload_id) / p for p in part_ids])
    try:
        # The digest is known only once the file is staged; a mismatch rolls the file back (it is not committed).
        stored = await files.create(
            session, store, tenant_id, upload.purpose, upload.filename, reader,  # type: ignore[arg-type]
            max_bytes=max_bytes, quota_bytes=quota_bytes, tokens=tokens,
            check=(lambda: _check_md5(md5, reader.md5.hexdigest())) if md5 else None,
        )  # fmt: skip
    finally:
        reader.close()
    upload = await get_owned(session, tenant_id, upload_id, lock=True)
    upload.status, upload.file_id = "completed", stored.id
    await session.commit()
    await asyncio.to_thread(shutil.rmtree, folder(root, upload_id), True)
    return upload, stored


def _check_md5(expected: Any, actual: str) -> None:
    if not isinstance(expected, str) or expected.lower() != actual:
        raise InvalidRequest(f"md5 mismatch: the parts hash to {actual}, not {expected!r}.", param="md5")


async def finish(session: AsyncSession, root: Path, upload: Upload, status: str) -> Upload:
    """Cancel or expire a pending upload: its parts are deleted."""
    upload.status = status
    await session.commit()
    await asyncio.to_thread(shutil.rmtree, folder(root, upload.id), True)
    return upload


async def expire(session: AsyncSession, root: Path, upload_id: str) -> None:
    """The queue's job, an hour after creation: an upload still pending expires."""
    upload = await session.get(Upload, upload_id, with_for_update=True)
    if upload is not None and upload.status == "pending":
        await finish(session, root, upload, "expired")
