"""Billing routes: the tenant sees its own numbers, the admin sees and changes everyone's."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from litestar import Controller, Request, get, post
from sqlalchemy.ext.asyncio import AsyncEngine

from billing import invoices, ledger, prices, reports
from gateway.accounts import reconcile, service
from gateway.accounts.schemas import (
    ClosePeriod,
    CreditCreate,
    PriceCreate,
    balance_json,
    invoice_json,
    usage_json,
)
from gateway.admin.guard import admin_guard
from gateway.audit.service import Actor
from gateway.auth.dependencies import provide_paying_caller
from gateway.auth.service import Caller
from gateway.settings import Settings


async def _usage(db: AsyncEngine, tenant_id: str, start: datetime | None, end: datetime | None) -> dict[str, Any]:
    async with db.connect() as conn:
        return usage_json(await reports.usage_by_day_and_model(conn, tenant_id, start, end))


async def _invoices(db: AsyncEngine, tenant_id: str) -> dict[str, Any]:
    async with db.connect() as conn:
        return {"object": "list", "data": [invoice_json(i) for i in await invoices.list_invoices(conn, tenant_id)]}


async def _balance(db: AsyncEngine, tenant_id: str) -> dict[str, Any]:
    async with db.connect() as conn:
        return balance_json(await ledger.balance(conn, tenant_id))


class TenantBillingController(Controller):
    path = "/v1"
    tags = ["Billing"]
    dependencies = {"caller": provide_paying_caller}  # an overdue tenant still sees what it owes

    @get("/balance")
    async def balance(self, caller: Caller, db_engine: AsyncEngine) -> dict[str, Any]:
        """Trial tokens left, prepaid credit (minor units), billing mode."""
        return await _balance(db_engine, caller.tenant_id)

    @get("/usage")
    async def usage(
        self,
        caller: Caller,
        db_engine: AsyncEngine,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> dict[str, Any]:
        """Your usage by day and model, with its cost."""
        return await _usage(db_engine, caller.tenant_id, start, end)

    @get("/invoices")
    async def invoices(self, caller: Caller, db_engine: AsyncEngine) -> dict[str, Any]:
        return await _invoices(db_engine, caller.tenant_id)


class AdminBillingController(Controller):
    path = "/admin"
    guards = [admin_guard]
    tags = ["Admin", "Billing"]

    @post("/prices", status_code=201)
    async def set_price(
        self, request: Request[Any, Any, Any], data: PriceCreate, db_engine: AsyncEngine, settings: Settings
    ) -> dict[str, Any]:
        """A new price version for a base model or a deployment; never re-rates the past."""
        return await service.set_price(db_engine, Actor.of(request), data, settings.billing.currency)

    @get("/prices")
    async def list_prices(self, db_engine: AsyncEngine) -> dict[str, Any]:
        async with db_engine.connect() as conn:
            return {"object": "list", "data": await prices.list_prices(conn)}

    @post("/tenants/{tenant_id:str}/credits", status_code=201)
    async def add_credit(
        self, request: Request[Any, Any, Any], tenant_id: str, data: CreditCreate, db_engine: AsyncEngine
    ) -> dict[str, Any]:
        """Top up a tenant's prepaid credit (minor units)."""
        return await service.add_credit(db_engine, Actor.of(request), tenant_id, data)

    @get("/tenants/{tenant_id:str}/balance")
    async def tenant_balance(self, tenant_id: str, db_engine: AsyncEngine) -> dict[str, Any]:
        return await _balance(db_engine, tenant_id)

    @get("/tenants/{tenant_id:str}/usage")
    async def tenant_usage(
        self,
        tenant_id: str,
        db_engine: AsyncEngine,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> dict[str, Any]:
        return await _usage(db_engine, tenant_id, start, end)

    @get("/tenants/{tenant_id:str}/invoices")
    async def tenant_invoices(self, tenant_id: str, db_engine: AsyncEngine) -> dict[str, Any]:
        return await _invoices(db_engine, tenant_id)

    @get("/billing/reconcile")
    async def reconciliation(self, db_engine: AsyncEngine, settings: Settings, stripe: bool = True) -> dict[str, Any]:
        """Usage vs charged vs invoiced tokens (vs Stripe when configured) per tenant; `ok` is false on any
        difference."""
        async with db_engine.connect() as conn:
            report = await reconcile.reconcile(conn, settings.billing if stripe else None)
        return {"ok": not any(r.problems for r in report), "data": reconcile.as_dicts(report)}

    @post("/billing/close-period", status_code=200)
    async def close_period(
        self, request: Request[Any, Any, Any], data: ClosePeriod, db_engine: AsyncEngine
    ) -> dict[str, Any]:
        """One invoice per tenant with charges in the period; closing again returns the same invoices."""
        closed = await service.close_period(db_engine, Actor.of(request), data)
        return {"object": "list", "period": data.period, "data": [invoice_json(i) for i in closed]}
