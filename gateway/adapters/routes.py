"""Tenant API for deployments: upload an adapter, list, get, delete."""

from __future__ import annotations

from typing import Any, BinaryIO

from litestar import Controller, Request, delete, get, post
from litestar.datastructures import UploadFile
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.adapters import service
from gateway.adapters.schemas import DeploymentList, DeploymentPublic
from gateway.adapters.storage import AdapterStore
from gateway.adapters.upload import UploadLimits, deploy_upload
from gateway.audit import service as audit
from gateway.audit.service import client_ip as _ip
from gateway.auth.service import Caller
from gateway.engine.pool import EnginePool
from gateway.errors import InvalidRequest, LengthRequired, PayloadTooLarge
from gateway.files.adapter_form import stored_adapter_form
from gateway.files.storage import BlobStore
from gateway.settings import Settings

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidRequest("Form field 'name' is required.", code="missing_required_parameter", param="name")
    name = name.strip()
    if len(name) > 100 or not set(name) <= _NAME_CHARS or name.startswith("mif-"):
        raise InvalidRequest(
            "'name' must be 1–100 characters of letters, digits, '-', '_' and '.', and not start with 'mif-'.",
            param="name",
        )
    return name


async def _read_form(request: Request[Any, Any, Any], settings: Settings) -> tuple[dict[str, Any], dict[str, BinaryIO]]:
    limit = settings.adapters.max_upload_bytes
    length = request.headers.get("content-length")
    if length is None:
        raise LengthRequired("Send the upload with a Content-Length header.")
    if not length.isdigit() or int(length) > limit:
        raise PayloadTooLarge(f"Uploads are limited to {limit} bytes.", param="file")
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidRequest("Upload the adapter as multipart/form-data.", code="invalid_content_type")
    form = await request.form()
    fields: dict[str, Any] = {}
    files: dict[str, BinaryIO] = {}
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            files[value.filename or key] = value.file  # type: ignore[assignment]
        else:
            fields[key] = value
    if not files:
        raise InvalidRequest(
            "No adapter file: send an archive (.tar.gz/.tgz/.zip) or adapter_config.json and "
            "adapter_model.safetensors as file fields.",
            code="missing_required_parameter",
            param="file",
        )
    return fields, files


class AdapterController(Controller):
    path = "/v1/adapters"
    tags = ["Deployments"]

    @post("/", status_code=201, request_max_body_size=None)
    async def upload(
        self,
        request: Request[Any, Any, Any],
        caller: Caller,
        db_session: AsyncSession,
        engines: EnginePool,
        adapter_store: AdapterStore,
        db_engine: AsyncEngine,
        file_store: BlobStore,
    ) -> DeploymentPublic:
        """Upload a PEFT LoRA adapter and deploy it on the shared engines (seconds); or name an `adapter` file
        already stored (`file_id`, e.g. from the Uploads API) instead of sending the archive."""
        settings: Settings = request.app.state.settings
        stored = await stored_adapter_form(request, caller.tenant_id, db_session, file_store)
        fields, files = stored or await _read_form(request, settings)
        limits = UploadLimits(settings.adapters.max_unpacked_bytes, settings.adapters.base_model_dir)
        base_model = fields.get("base_model") or None
        adapter = await deploy_upload(
            db_session,
            engines,
            adapter_store,
            limits,
            caller.tenant_id,
            _check_name(fields.get("name")),
            base_model,
            files,
        )
        detail = {"tenant_id": caller.tenant_id, "name": adapter.name, "status": adapter.status}
        await audit.record(db_engine, caller.key_id, "adapter.upload", adapter.id, detail, _ip(request))
        return DeploymentPublic.of(adapter)

    @get("/")
    async def list_deployments(self, caller: Caller, db_session: AsyncSession) -> DeploymentList:
        return DeploymentList(
            data=[DeploymentPublic.of(a) for a in await service.list_owned(db_session, caller.tenant_id)]
        )

    @get("/{deployment_id:str}")
    async def get_deployment(self, deployment_id: str, caller: Caller, db_session: AsyncSession) -> DeploymentPublic:
        return DeploymentPublic.of(await service.get_owned(db_session, caller.tenant_id, deployment_id))

    @delete("/{deployment_id:str}", status_code=200)
    async def delete_deployment(
        self,
        request: Request[Any, Any, Any],
        deployment_id: str,
        caller: Caller,
        db_session: AsyncSession,
        engines: EnginePool,
        adapter_store: AdapterStore,
        db_engine: AsyncEngine,
    ) -> dict[str, Any]:
        adapter = await service.get_owned(db_session, caller.tenant_id, deployment_id)
        await service.delete(db_session, engines, adapter_store, adapter)
        detail = {"tenant_id": caller.tenant_id, "name": adapter.name}
        await audit.record(db_engine, caller.key_id, "adapter.delete", adapter.id, detail, _ip(request))
        return {"id": adapter.id, "object": "deployment", "deleted": True}
