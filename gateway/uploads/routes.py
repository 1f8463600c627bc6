"""OpenAI's Uploads API: create, add parts, complete (→ a file), cancel."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

from litestar import Controller, Request, post
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.auth.service import Caller
from gateway.engine.pool import EnginePool
from gateway.errors import InvalidRequest
from gateway.files.routes import read_file_form
from gateway.files.schemas import FilePublic
from gateway.files.storage import BlobStore
from gateway.fine_tuning.base_models import token_check
from gateway.settings import Settings
from gateway.uploads import service
from gateway.uploads.models import Upload


def upload_public(u: Upload, file: FilePublic | None = None) -> dict[str, Any]:
    return {
        "id": u.id,
        "object": "upload",
        "bytes": u.bytes,
        "created_at": int(u.created_at.timestamp()),
        "expires_at": int(u.expires_at.timestamp()),
        "filename": u.filename,
        "purpose": u.purpose,
        "status": u.status,
        "file": file,
    }


async def _json(request: Request[Any, Any, Any]) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object.", code="invalid_json")
    return body


def parts_root(settings: Settings) -> Path:
    return settings.storage.data_dir / "uploads"


class UploadController(Controller):
    path = "/v1/uploads"
    tags = ["Files"]

    @post("/", status_code=200)
    async def create(
        self, request: Request[Any, Any, Any], caller: Caller, db_session: AsyncSession, settings: Settings
    ) -> dict[str, Any]:
        """Start an upload of `bytes` bytes; it expires an hour later (UPLOADS_EXPIRE_AFTER) unless completed."""
        body = await _json(request)
        limits = settings.fine_tuning
        lifetime = timedelta(seconds=limits.upload_lifetime_s)
        return upload_public(await service.create(db_session, caller.tenant_id, body, limits.files_max_bytes, lifetime))

    @post("/{upload_id:str}/parts", status_code=200, request_max_body_size=None)
    async def add_part(
        self, upload_id: str, request: Request[Any, Any, Any], caller: Caller, db_session: AsyncSession,
        settings: Settings, file_store: BlobStore,
    ) -> dict[str, Any]:  # fmt: skip
        """One part (multipart field `data`, ≤ 64 MB); send a failed part again."""
        await service.get_owned(db_session, caller.tenant_id, upload_id)
        spool = await asyncio.to_thread(file_store.spool_dir)
        _, source, _ = await read_file_form(request, service.PART_LIMIT, "data", spool)
        with source:
            part = await service.add_part(db_session, parts_root(settings), caller.tenant_id, upload_id, source)
        return {"id": part.id, "object": "upload.part", "created_at": int(part.created_at.timestamp()),
                "upload_id": upload_id}  # fmt: skip

    @post("/{upload_id:str}/complete", status_code=200)
    async def complete(
        self, upload_id: str, request: Request[Any, Any, Any], caller: Caller, db_session: AsyncSession,
        engines: EnginePool, file_store: BlobStore, settings: Settings,
    ) -> dict[str, Any]:  # fmt: skip
        """Join the parts (`part_ids`, in order; optional `md5` of the whole) into a file."""
        body = await _json(request)
        upload = await service.get_owned(db_session, caller.tenant_id, upload_id)
        tokens = await token_check(engines, settings) if upload.purpose == "fine-tune" else None
        limits = settings.fine_tuning
        upload, stored = await service.complete(
            db_session, parts_root(settings), file_store, caller.tenant_id, upload_id, body,
            max_bytes=limits.files_max_bytes, quota_bytes=limits.files_tenant_quota_bytes, tokens=tokens,
        )  # fmt: skip
        return upload_public(upload, FilePublic.of(stored))

    @post("/{upload_id:str}/cancel", status_code=200)
    async def cancel(
        self, upload_id: str, caller: Caller, db_session: AsyncSession, settings: Settings
    ) -> dict[str, Any]:
        """Cancel a pending upload; its parts are deleted."""
        upload = await service.get_owned(db_session, caller.tenant_id, upload_id, lock=True)
        if upload.status != "pending":
            raise InvalidRequest(f"Upload {upload_id} is {upload.status}; it cannot be cancelled.", param="upload_id")
        return upload_public(await service.finish(db_session, parts_root(settings), upload, "cancelled"))
