"""Tenant API for deployments: upload an adapter, list, get, delete."""

from __future__ import annotations

import asyncio
from typing import Any, BinaryIO

from litestar import Controller, Request, delete, get, post
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.adapters import quotas, service
from gateway.adapters.form import UploadForm, read_upload_form
from gateway.adapters.models import Adapter
from gateway.adapters.schemas import DeploymentList, DeploymentPublic
from gateway.adapters.slots import UploadSlots
from gateway.adapters.storage import AdapterStore
from gateway.adapters.upload import UploadLimits, deploy_upload
from gateway.audit.service import Actor
from gateway.auth.models import Scope
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


def _boundary(request: Request[Any, Any, Any], settings: Settings) -> bytes:
    """The multipart boundary, once the headers promise a body the gateway accepts."""
    limit = settings.adapters.max_upload_bytes
    length = request.headers.get("content-length")
    if length is None:
        raise LengthRequired("Send the upload with a Content-Length header.")
    if not length.isdigit() or int(length) > limit:
        raise PayloadTooLarge(f"Uploads are limited to {limit} bytes.", param="file")
    kind, options = request.content_type
    if kind != "multipart/form-data" or not options.get("boundary"):
        raise InvalidRequest("Upload the adapter as multipart/form-data.", code="invalid_content_type")
    return options["boundary"].encode()


async def _read_form(request: Request[Any, Any, Any], boundary: bytes, store: AdapterStore) -> UploadForm:
    """Text fields capped, files streamed to temporary files (the caller closes them)."""
    spool = await asyncio.to_thread(store.spool_dir)
    form = await read_upload_form(request.stream(), boundary, spool)
    if not form.files:
        form.close()
        raise InvalidRequest(
            "No adapter file: send an archive (.tar.gz/.tgz/.zip) or adapter_config.json and "
            "adapter_model.safetensors as file fields.",
            code="missing_required_parameter",
            param="file",
        )
    return form


async def receive_upload(
    request: Request[Any, Any, Any],
    tenant_id: str,
    actor: Actor,
    db_session: AsyncSession,
    db_engine: AsyncEngine,
    engines: EnginePool,
    adapter_store: AdapterStore,
    *,
    stored: tuple[dict[str, Any], dict[str, BinaryIO]] | None = None,
) -> Adapter:
    """Read a multipart upload (bounded, streamed to disk) — or take an archive already `stored` (a file_id) —
    and deploy it (deploy_upload): the API's upload and the console's "New deployment" form share it."""
    settings: Settings = request.app.state.settings
    boundary = None if stored else _boundary(request, settings)
    bounds = await quotas.bounds(db_engine, tenant_id, settings.tenants)
    await quotas.admit_upload(db_engine, bounds)  # before the body is read
    slots: UploadSlots = request.app.state.upload_slots
    with slots.hold(tenant_id):
        if stored:
            form = UploadForm({k: str(v) for k, v in stored[0].items()}, stored[1])
        else:
            assert boundary is not None
            form = await _read_form(request, boundary, adapter_store)
        try:
            limits = UploadLimits(settings.adapters.max_unpacked_bytes, settings.adapters.base_model_dir)
            return await deploy_upload(
                db_session,
                engines,
                adapter_store,
                limits,
                tenant_id,
                _check_name(form.fields.get("name")),
                form.fields.get("base_model") or None,
                form.files,
                actor,
                bounds,
            )
        finally:
            form.close()


class AdapterController(Controller):
    path = "/v1/adapters"
    tags = ["Deployments"]

    @post("/", status_code=201, request_max_body_size=None)
    async def upload(
        self,
        request: Request[Any, Any, Any],
        caller: Caller,
        db_session: AsyncSession,
        db_engine: AsyncEngine,
        engines: EnginePool,
        adapter_store: AdapterStore,
        file_store: BlobStore,
    ) -> DeploymentPublic:
        """Upload a PEFT LoRA adapter and deploy it on the shared engines (seconds); or name an `adapter` file
        already stored (`file_id`, e.g. from the Uploads API) instead of sending the archive. Needs the
        `deployments` scope."""
        caller.require(Scope.DEPLOYMENTS)
        actor = Actor.of(request, caller.key_id)
        stored = await stored_adapter_form(request, caller.tenant_id, db_session, file_store)
        adapter = await receive_upload(
            request, caller.tenant_id, actor, db_session, db_engine, engines, adapter_store, stored=stored
        )
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
    ) -> dict[str, Any]:
        caller.require(Scope.DEPLOYMENTS)
        adapter = await service.get_owned(db_session, caller.tenant_id, deployment_id)
        await service.delete(db_session, engines, adapter_store, adapter, Actor.of(request, caller.key_id))
        return {"id": adapter.id, "object": "deployment", "deleted": True}
