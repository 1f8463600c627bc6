"""OpenAI's Files API: upload (multipart), list, retrieve, content, delete — a tenant sees only its own."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, BinaryIO

from litestar import Controller, Request, Response, delete, get, post
from litestar.response import Stream
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.adapters.form import read_upload_form
from gateway.auth.service import Caller
from gateway.engine.pool import EnginePool
from gateway.errors import InvalidRequest, LengthRequired, PayloadTooLarge
from gateway.files import service
from gateway.files.schemas import FileDeleted, FileList, FilePublic
from gateway.files.storage import BlobStore
from gateway.fine_tuning.base_models import token_check
from gateway.settings import Settings

# Multipart overhead allowed on top of the file itself (boundaries, headers, the purpose field).
_FORM_SLACK = 64 * 1024


async def read_file_form(
    request: Request[Any, Any, Any], limit: int, field: str, spool_dir: Path
) -> tuple[dict[str, str], BinaryIO, str]:
    """The form fields and the one uploaded file of a multipart request, through the adapters' form reader:
    text fields capped, the file streamed to an unnamed temporary file in `spool_dir` (the caller closes it)."""
    length = request.headers.get("content-length")
    if length is None:
        raise LengthRequired("Send the upload with a Content-Length header.")
    if not length.isdigit() or int(length) > limit + _FORM_SLACK:
        raise PayloadTooLarge(f"Files are limited to {limit} bytes.", param=field)
    kind, options = request.content_type
    if kind != "multipart/form-data" or not options.get("boundary"):
        raise InvalidRequest("Send the file as multipart/form-data.", code="invalid_content_type")
    form = await read_upload_form(request.stream(), options["boundary"].encode(), spool_dir)
    if len(form.files) != 1:
        form.close()
        raise InvalidRequest(
            f"Send one file, as the form field '{field}'.", code="missing_required_parameter", param=field
        )
    ((filename, handle),) = form.files.items()
    return form.fields, handle, filename


class FileController(Controller):
    path = "/v1/files"
    tags = ["Files"]

    @post("/", status_code=200, request_max_body_size=None)
    async def upload(
        self,
        request: Request[Any, Any, Any],
        caller: Caller,
        db_session: AsyncSession,
        engines: EnginePool,
        file_store: BlobStore,
        settings: Settings,
    ) -> FilePublic:
        """Upload a file: `purpose=fine-tune` (JSON Lines of chat conversations, validated now) or `adapter`."""
        limits = settings.fine_tuning
        fields, source, filename = await read_file_form(
            request, limits.files_max_bytes, "file", await asyncio.to_thread(file_store.spool_dir)
        )
        with source:
            purpose = service.check_purpose(fields.get("purpose"))
            tokens = await token_check(engines, settings) if purpose == "fine-tune" else None
            row = await service.create(
                db_session,
                file_store,
                caller.tenant_id,
                purpose,
                filename,
                source,
                max_bytes=limits.files_max_bytes,
                quota_bytes=limits.files_tenant_quota_bytes,
                tokens=tokens,
            )
        return FilePublic.of(row)

    @get("/")
    async def list_files(
        self,
        caller: Caller,
        db_session: AsyncSession,
        purpose: str | None = None,
        limit: int = 10000,
        after: str | None = None,
        order: str = "desc",
    ) -> FileList:
        if not 1 <= limit <= 10000:
            raise InvalidRequest("'limit' must be between 1 and 10000.", param="limit")
        if order not in ("asc", "desc"):
            raise InvalidRequest("'order' must be asc or desc.", param="order")
        rows, more = await service.list_owned(db_session, caller.tenant_id, purpose, limit, after, order)
        data = [FilePublic.of(r) for r in rows]
        return FileList(
            data=data, has_more=more, first_id=data[0].id if data else None, last_id=data[-1].id if data else None
        )

    @get("/{file_id:str}")
    async def retrieve(self, file_id: str, caller: Caller, db_session: AsyncSession) -> FilePublic:
        return FilePublic.of(await service.get_owned(db_session, caller.tenant_id, file_id))

    @get("/{file_id:str}/content")
    async def content(
        self, file_id: str, caller: Caller, db_session: AsyncSession, file_store: BlobStore
    ) -> Response[Any]:
        """The file's bytes, as uploaded."""
        row = await service.get_owned(db_session, caller.tenant_id, file_id)
        return Stream(
            file_store.chunks(row.content_hash),
            media_type="application/octet-stream",
            headers={"Content-Length": str(row.bytes)},
        )

    @delete("/{file_id:str}", status_code=200)
    async def remove(
        self, file_id: str, caller: Caller, db_session: AsyncSession, file_store: BlobStore
    ) -> FileDeleted:
        row = await service.get_owned(db_session, caller.tenant_id, file_id)
        await service.delete(db_session, file_store, row)
        return FileDeleted(id=row.id)
