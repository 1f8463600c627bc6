"""Admin API for sign-ups: approve or reject a pending tenant (the list is GET /admin/tenants?status=pending)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, post
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.admin import service as admin
from gateway.admin.guard import admin_guard
from gateway.audit.service import Actor
from gateway.people import signup
from gateway.settings import Settings


class AdminSignupController(Controller):
    path = "/admin/tenants"
    guards = [admin_guard]
    tags = ["Admin"]

    @post("/{tenant_id:str}/approve", status_code=200)
    async def approve(
        self, request: Request[Any, Any, Any], tenant_id: str, db_session: AsyncSession, db_engine: AsyncEngine,
        settings: Settings,
    ) -> dict[str, Any]:  # fmt: skip
        """Approve a pending application: the tenant becomes active and gets its billing account and trial tokens
        (BILLING_TRIAL_TOKENS), in one transaction with the audit row. 409 unless it is pending."""
        await signup.decide(db_session, Actor.of(request), tenant_id, approve=True, terms=signup.terms(settings))
        return await admin.get_tenant(db_engine, tenant_id, settings.tenants)

    @post("/{tenant_id:str}/reject", status_code=200)
    async def reject(
        self, request: Request[Any, Any, Any], tenant_id: str, db_session: AsyncSession, db_engine: AsyncEngine,
        settings: Settings,
    ) -> dict[str, Any]:  # fmt: skip
        """Reject a pending application: its users cannot sign in (they are told why). 409 unless it is pending."""
        await signup.decide(db_session, Actor.of(request), tenant_id, approve=False, terms=signup.terms(settings))
        return await admin.get_tenant(db_engine, tenant_id, settings.tenants)
