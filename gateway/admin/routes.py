"""Admin API: tenants, keys, deployments, audit. Thin: parse, call the service (which commits the change with its
audit row), shape the answer."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

from litestar import Controller, Request, delete, get, patch, post
from litestar.params import Parameter
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from billing import ledger
from gateway.adapters import service as adapters
from gateway.adapters.upload import UploadLimits, registered_folder
from gateway.admin import service as admin
from gateway.admin.guard import admin_guard
from gateway.admin.schemas import (
    AdapterPublic,
    AdapterRegister,
    KeyCreate,
    KeyCreated,
    KeyPatch,
    TenantCreate,
    TenantPatch,
    TenantPublic,
)
from gateway.audit import service as audit
from gateway.audit.service import Actor
from gateway.auth import service as auth
from gateway.auth.models import TenantStatus
from gateway.engine.pool import EnginePool
from gateway.errors import InvalidRequest
from gateway.settings import Settings


def _clean_name(name: str, what: str) -> str:
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidRequest(f"{what} name must be 1–200 characters.", param="name")
    return name


class AdminController(Controller):
    path = "/admin"
    guards = [admin_guard]
    tags = ["Admin"]

    @get("/tenants")
    async def list_tenants(
        self, db_engine: AsyncEngine, settings: Settings, status: TenantStatus | None = None
    ) -> dict[str, Any]:
        """Every tenant with its state, key and deployment counts, balance and trial, limits; `?status=pending`:
        the applications waiting for approval."""
        data = await admin.list_tenants(db_engine, defaults=settings.tenants, status=status.value if status else None)
        return {"object": "list", "data": data}

    @post("/tenants", status_code=201)
    async def create_tenant(
        self, request: Request[Any, Any, Any], data: TenantCreate, db_session: AsyncSession, settings: Settings
    ) -> TenantPublic:
        """A tenant and its billing account (with its free-trial grant)."""
        mode = data.billing_mode or settings.billing.default_mode
        trial = settings.billing.trial_tokens if data.trial_tokens is None else data.trial_tokens
        terms = ledger.AccountDefaults(mode, trial, settings.billing.currency)
        tenant = await admin.create_tenant(db_session, Actor.of(request), _clean_name(data.name, "Tenant"), terms)
        return TenantPublic(tenant.id, tenant.name, tenant.created_at, billing_mode=mode, trial_tokens=trial)

    @get("/tenants/{tenant_id:str}")
    async def get_tenant(self, tenant_id: str, db_engine: AsyncEngine, settings: Settings) -> dict[str, Any]:
        return await admin.get_tenant(db_engine, tenant_id, settings.tenants)

    @patch("/tenants/{tenant_id:str}")
    async def patch_tenant(
        self,
        request: Request[Any, Any, Any],
        tenant_id: str,
        data: TenantPatch,
        db_session: AsyncSession,
        db_engine: AsyncEngine,
        settings: Settings,
    ) -> dict[str, Any]:
        """Rename or suspend/resume a tenant, or set its limits (null: the TENANT_* default, 0: unlimited).
        A suspended tenant's keys get 403; nothing is deleted."""
        name = _clean_name(data.name, "Tenant") if data.name is not None else None
        await admin.patch_tenant(db_session, Actor.of(request), tenant_id, name, data.suspended, data.limit_changes())
        return await admin.get_tenant(db_engine, tenant_id, settings.tenants)

    @get("/tenants/{tenant_id:str}/keys")
    async def list_keys(self, tenant_id: str, db_engine: AsyncEngine) -> dict[str, Any]:
        return {"object": "list", "data": await admin.list_keys(db_engine, tenant_id)}

    @post("/tenants/{tenant_id:str}/keys", status_code=201)
    async def create_key(
        self, request: Request[Any, Any, Any], tenant_id: str, data: KeyCreate, db_session: AsyncSession
    ) -> KeyCreated:
        key, plaintext = await admin.create_key(
            db_session, Actor.of(request), tenant_id, data.name.strip(), data.expires_at, data.limit_changes()
        )
        return KeyCreated(
            id=key.id, tenant_id=key.tenant_id, name=key.name, prefix=key.prefix, created_at=key.created_at,
            expires_at=key.expires_at, key=plaintext,
        )  # fmt: skip

    @patch("/keys/{key_id:str}")
    async def patch_key(
        self, request: Request[Any, Any, Any], key_id: str, data: KeyPatch, db_session: AsyncSession
    ) -> dict[str, Any]:
        """Rename a key or set its rate limits (null = unlimited)."""
        key = await admin.patch_key(db_session, Actor.of(request), key_id, data.name, data.limit_changes())
        return {"id": key.id, "tenant_id": key.tenant_id, "name": key.name, "rpm_limit": key.rpm_limit,
                "tpm_limit": key.tpm_limit, "max_concurrent_requests": key.max_concurrent_requests}  # fmt: skip

    @delete("/keys/{key_id:str}", status_code=204)
    async def revoke_key(self, request: Request[Any, Any, Any], key_id: str, db_session: AsyncSession) -> None:
        await admin.revoke_key(db_session, Actor.of(request), key_id)

    @get("/deployments")
    async def list_deployments(self, db_engine: AsyncEngine, tenant_id: str | None = None) -> dict[str, Any]:
        """Every deployment (deleted ones too, with deleted_at), newest first."""
        return {"object": "list", "data": await admin.list_deployments(db_engine, tenant_id)}

    @get("/audit")
    async def audit_log(
        self,
        db_engine: AsyncEngine,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
        since: datetime | None = None,
        limit: Annotated[int, Parameter(ge=1, le=1000)] = 200,
    ) -> dict[str, Any]:
        """The audit log, newest first: who did what to what, when, from where (1–1000 rows)."""
        rows = await audit.query(db_engine, actor=actor, action=action, target=target, since=since, limit=limit)
        return {"object": "list", "data": rows}

    @post("/tenants/{tenant_id:str}/adapters", status_code=201)
    async def register_adapter(
        self,
        request: Request[Any, Any, Any],
        tenant_id: str,
        data: AdapterRegister,
        db_session: AsyncSession,
        engines: EnginePool,
        settings: Settings,
    ) -> AdapterPublic:
        """Register an adapter folder under ADAPTER_REGISTER_ROOT, checked like an upload (off when unset)."""
        await auth.get_tenant(db_session, tenant_id)
        info = await engines.info()
        limits = UploadLimits(settings.adapters.max_unpacked_bytes, settings.adapters.base_model_dir)
        root = settings.adapters.register_root
        path, spec = await asyncio.to_thread(registered_folder, data.path, root, info, limits)
        name = _clean_name(data.name, "Adapter")
        a = await adapters.register(
            db_session,
            engines,
            info,
            tenant_id,
            name,
            path,
            spec.rank,
            actor=Actor.of(request),
            action="adapter.register",
        )
        return AdapterPublic(
            id=a.id, tenant_id=a.tenant_id, name=a.name, base_model=a.base_model, status=a.status,
            status_reason=a.status_reason, rank=a.rank, created_at=a.created_at,
        )  # fmt: skip
