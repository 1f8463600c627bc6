"""Tenants and keys on the dashboard: create, suspend and resume, set limits (owners). The same services as the
admin API (gateway/admin/service.py), which commit each change with its audit row."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from litestar import Controller, Request, post
from litestar.response import Redirect, Template
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from billing import ledger
from gateway.admin import service as admin
from gateway.auth.models import ApiKey
from gateway.dashboard import session, views
from gateway.dashboard.actions import forms
from gateway.dashboard.pages import Form
from gateway.errors import InvalidRequest, NotFound
from gateway.settings import Settings

BILLING_MODES = ("prepaid", "postpaid")


def _terms(data: dict[str, str], settings: Settings) -> ledger.AccountDefaults:
    mode = data.get("billing_mode") or settings.billing.default_mode
    if mode not in BILLING_MODES:
        raise InvalidRequest("Billing mode must be prepaid or postpaid.", param="billing_mode")
    trial = forms.integer(data, "trial_tokens", "Trial tokens")
    return ledger.AccountDefaults(mode, settings.billing.trial_tokens if trial is None else trial,
                                  settings.billing.currency)  # fmt: skip


def _expiry(data: dict[str, str]) -> datetime | None:
    """An optional expiry date (the key works until the start of that day, UTC)."""
    value = data.get("expires_at", "").strip()
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    except ValueError:
        raise InvalidRequest("Expires must be a date (YYYY-MM-DD).", param="expires_at") from None


class TenantActions(Controller):
    path = "/dashboard"
    guards = [session.require_session, session.may_manage]

    @post("/tenants", include_in_schema=False, status_code=303)
    async def create_tenant(
        self, request: Request[Any, Any, Any], data: Form, db_session: AsyncSession, db_engine: AsyncEngine,
        settings: Settings,
    ) -> Redirect | Template:  # fmt: skip
        who, actor = await forms.operator(request)
        try:
            name = forms.text(data, "name", "Tenant name")
            tenant = await admin.create_tenant(db_session, actor, name, _terms(data, settings))
        except forms.REFUSALS as exc:
            await db_session.rollback()
            return await views.overview(request, db_engine, settings, **forms.refusal(exc))
        return await forms.done(db_session, who, f"Tenant {tenant.name} created.",
                                f"/admin/dashboard/tenants/{tenant.id}")  # fmt: skip

    @post("/tenants/{tenant_id:str}/keys", include_in_schema=False, status_code=201)
    async def create_key(
        self, request: Request[Any, Any, Any], tenant_id: str, data: Form, db_session: AsyncSession,
        db_engine: AsyncEngine, settings: Settings,
    ) -> Template:  # fmt: skip
        """The new key is on this response only (never stored, never in a flash message): shown once."""
        _, actor = await forms.operator(request)
        try:
            name = forms.text(data, "name", "Key name", required=False)
            key, plaintext = await admin.create_key(
                db_session, actor, tenant_id, name, _expiry(data), forms.limits(data, forms.KEY_LIMITS)
            )
        except forms.REFUSALS as exc:
            await db_session.rollback()
            return await views.tenant(request, db_engine, settings, tenant_id, **forms.refusal(exc))
        new_key = {"id": key.id, "name": key.name, "prefix": key.prefix, "key": plaintext}
        return await views.tenant(request, db_engine, settings, tenant_id, status_code=201, new_key=new_key)

    @post("/tenants/{tenant_id:str}/suspend", include_in_schema=False, status_code=303)
    async def suspend(self, request: Request[Any, Any, Any], tenant_id: str, db_session: AsyncSession) -> Redirect:
        who, actor = await forms.operator(request)
        await admin.patch_tenant(db_session, actor, tenant_id, None, True, {})  # NotFound: the error page
        return await forms.done(db_session, who, "Tenant suspended: its keys get 403 until it is resumed.",
                                f"/admin/dashboard/tenants/{tenant_id}")  # fmt: skip

    @post("/tenants/{tenant_id:str}/resume", include_in_schema=False, status_code=303)
    async def resume(self, request: Request[Any, Any, Any], tenant_id: str, db_session: AsyncSession) -> Redirect:
        who, actor = await forms.operator(request)
        await admin.patch_tenant(db_session, actor, tenant_id, None, False, {})
        return await forms.done(db_session, who, "Tenant resumed: its keys work again.",
                                f"/admin/dashboard/tenants/{tenant_id}")  # fmt: skip

    @post("/tenants/{tenant_id:str}/limits", include_in_schema=False, status_code=303)
    async def tenant_limits(
        self, request: Request[Any, Any, Any], tenant_id: str, data: Form, db_session: AsyncSession,
        db_engine: AsyncEngine, settings: Settings,
    ) -> Redirect | Template:  # fmt: skip
        who, actor = await forms.operator(request)
        try:
            limits = forms.limits(data, forms.TENANT_LIMITS)
            await admin.patch_tenant(db_session, actor, tenant_id, None, None, limits)
        except forms.REFUSALS as exc:
            await db_session.rollback()
            return await views.tenant(request, db_engine, settings, tenant_id, **forms.refusal(exc))
        return await forms.done(db_session, who, "Tenant limits saved.", f"/admin/dashboard/tenants/{tenant_id}")

    @post("/keys/{key_id:str}/limits", include_in_schema=False, status_code=303)
    async def key_limits(
        self, request: Request[Any, Any, Any], key_id: str, data: Form, db_session: AsyncSession,
        db_engine: AsyncEngine, settings: Settings,
    ) -> Redirect | Template:  # fmt: skip
        who, actor = await forms.operator(request)
        found = await db_session.get(ApiKey, key_id)
        if found is None:
            raise NotFound(f"No key {key_id!r}.", param="key_id")
        tenant_id = found.tenant_id
        try:
            key = await admin.patch_key(db_session, actor, key_id, None, forms.limits(data, forms.KEY_LIMITS))
        except forms.REFUSALS as exc:
            await db_session.rollback()
            return await views.tenant(request, db_engine, settings, tenant_id, **forms.refusal(exc))
        return await forms.done(db_session, who, f"Limits of key {key.prefix}… saved.",
                                f"/admin/dashboard/tenants/{tenant_id}")  # fmt: skip
