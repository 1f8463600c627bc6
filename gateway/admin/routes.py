"""Admin API: tenants, keys, adapter registration. Thin: parse, call the service, shape the answer."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from litestar import Controller, delete, post
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from billing import ledger
from gateway.adapters import service as adapters
from gateway.admin.guard import admin_guard
from gateway.admin.schemas import (
    AdapterPublic,
    AdapterRegister,
    KeyCreate,
    KeyCreated,
    TenantCreate,
    TenantPublic,
)
from gateway.auth import service as auth
from gateway.engine.client import EngineClient
from gateway.errors import InvalidRequest
from gateway.settings import Settings


def _adapter_folder(raw: str) -> tuple[Path, int]:
    """The resolved folder and its LoRA rank."""
    path = Path(raw).resolve()
    config = path / "adapter_config.json"
    if not config.is_file():
        raise InvalidRequest(f"No adapter_config.json in {str(path)!r} on the gateway host.", param="path")
    return path, int(json.loads(config.read_text()).get("r", 0))


def _clean_name(name: str, what: str) -> str:
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidRequest(f"{what} name must be 1–200 characters.", param="name")
    return name


class AdminController(Controller):
    path = "/admin"
    guards = [admin_guard]
    tags = ["Admin"]

    @post("/tenants", status_code=201)
    async def create_tenant(
        self, data: TenantCreate, db_session: AsyncSession, db_engine: AsyncEngine, settings: Settings
    ) -> TenantPublic:
        """A tenant and its billing account (with its free-trial grant)."""
        mode = data.billing_mode or settings.billing.default_mode
        trial = settings.billing.trial_tokens if data.trial_tokens is None else data.trial_tokens
        if mode not in ("prepaid", "postpaid") or trial < 0:
            raise InvalidRequest("billing_mode must be prepaid or postpaid, trial_tokens ≥ 0.", param="billing_mode")
        tenant = await auth.create_tenant(db_session, _clean_name(data.name, "Tenant"))
        async with db_engine.begin() as conn:
            await ledger.open_account(conn, tenant.id, mode, trial, settings.billing.currency)
        return TenantPublic(tenant.id, tenant.name, tenant.created_at, billing_mode=mode, trial_tokens=trial)

    @post("/tenants/{tenant_id:str}/keys", status_code=201)
    async def create_key(self, tenant_id: str, data: KeyCreate, db_session: AsyncSession) -> KeyCreated:
        key, plaintext = await auth.create_key(db_session, tenant_id, data.name.strip())
        return KeyCreated(
            id=key.id,
            tenant_id=key.tenant_id,
            name=key.name,
            prefix=key.prefix,
            created_at=key.created_at,
            key=plaintext,
        )

    @delete("/keys/{key_id:str}", status_code=204)
    async def revoke_key(self, key_id: str, db_session: AsyncSession) -> None:
        await auth.revoke_key(db_session, key_id)

    @post("/tenants/{tenant_id:str}/adapters", status_code=201)
    async def register_adapter(
        self, tenant_id: str, data: AdapterRegister, db_session: AsyncSession, engine: EngineClient
    ) -> AdapterPublic:
        await auth.get_tenant(db_session, tenant_id)
        path, rank = await asyncio.to_thread(_adapter_folder, data.path)
        info = await engine.info()
        a = await adapters.register(db_session, engine, info, tenant_id, _clean_name(data.name, "Adapter"), path, rank)
        return AdapterPublic(
            id=a.id, tenant_id=a.tenant_id, name=a.name, base_model=a.base_model, status=a.status,
            status_reason=a.status_reason, rank=a.rank, created_at=a.created_at,
        )  # fmt: skip
