"""`POST /v1/adapters` with `file_id`: deploy an `adapter` archive stored by the Files or Uploads API."""

from __future__ import annotations

from typing import Any, BinaryIO

from litestar import Request
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.errors import InvalidRequest
from gateway.files import service as file_service
from gateway.files.storage import BlobStore


async def stored_adapter_form(
    request: Request[Any, Any, Any], tenant_id: str, session: AsyncSession, store: BlobStore
) -> tuple[dict[str, Any], dict[str, BinaryIO]] | None:
    """A form naming a stored `adapter` file (`file_id`, e.g. completed through the Uploads API) instead of
    carrying the archive: the fields and the stored archive, opened. None when the form has no file_id."""
    length = request.headers.get("content-length") or ""
    small = length.isdigit() and int(length) <= 64 * 1024  # an archive-carrying upload is left to _read_form's limits
    # Only a urlencoded form names a stored file: a multipart body carries the archive itself, and is left unread
    # for the upload's own streaming reader (reading it here would consume it).
    if not small or not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return None
    form = await request.form()
    file_id = form.get("file_id")
    if not isinstance(file_id, str) or not file_id:
        return None
    row = await file_service.get_owned(session, tenant_id, file_id)
    if row.purpose != "adapter":
        raise InvalidRequest(f"File {file_id} has purpose {row.purpose!r}, not 'adapter'.", param="file_id")
    fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
    return fields, {row.filename: store.path_of(row.content_hash).open("rb")}
