"""Billing on the dashboard: prices (owners), credit and closing a period (owners and billing operators). The
same services as the admin API (gateway/accounts/service.py): each change commits with its audit row."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.response import Redirect, Template
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from billing import prices
from gateway.accounts import service as accounts
from gateway.accounts.schemas import ClosePeriod, CreditCreate, PriceCreate
from gateway.dashboard import session, views
from gateway.dashboard.actions import forms
from gateway.dashboard.pages import Form, page
from gateway.db import guarded
from gateway.settings import Settings
from gateway.timeutil import utcnow


async def billing_page(request: Request[Any, Any, Any], db: AsyncEngine, settings: Settings, **extra: Any) -> Template:
    async with guarded(), db.connect() as conn:
        rows = await prices.list_prices(conn)
    return page(request, "billing.html", prices=rows, currency=settings.billing.currency,
                this_month=utcnow().strftime("%Y-%m"), **extra)  # fmt: skip


class BillingController(Controller):
    path = "/dashboard"
    guards = [session.require_session]

    @get("/billing", include_in_schema=False)
    async def billing(self, request: Request[Any, Any, Any], db_engine: AsyncEngine, settings: Settings) -> Template:
        return await billing_page(request, db_engine, settings)

    @post("/prices", include_in_schema=False, status_code=303, guards=[session.may_manage])
    async def set_price(
        self, request: Request[Any, Any, Any], data: Form, db_session: AsyncSession, db_engine: AsyncEngine,
        settings: Settings,
    ) -> Redirect | Template:  # fmt: skip
        who, actor = await forms.operator(request)
        try:
            price = PriceCreate(
                model=forms.text(data, "model", "Model"),
                prompt_per_million=forms.required_integer(data, "prompt_per_million", "Prompt price"),
                completion_per_million=forms.required_integer(data, "completion_per_million", "Completion price"),
            )
            await accounts.set_price(db_engine, actor, price, settings.billing.currency)
        except forms.REFUSALS as exc:
            return await billing_page(request, db_engine, settings, **forms.refusal(exc))
        return await forms.done(db_session, who, f"Price of {price.model} set.", "/admin/dashboard/billing")

    @post("/billing/close-period", include_in_schema=False, status_code=303, guards=[session.may_bill])
    async def close_period(
        self, request: Request[Any, Any, Any], data: Form, db_session: AsyncSession, db_engine: AsyncEngine,
        settings: Settings,
    ) -> Redirect | Template:  # fmt: skip
        who, actor = await forms.operator(request)
        try:
            period = forms.text(data, "period", "Period", limit=10)
            closed = await accounts.close_period(db_engine, actor, ClosePeriod(period))
        except forms.REFUSALS as exc:
            return await billing_page(request, db_engine, settings, **forms.refusal(exc))
        n = len(closed)
        return await forms.done(db_session, who, f"Period {period} closed: {n} invoice{'' if n == 1 else 's'}.",
                                "/admin/dashboard/billing")  # fmt: skip

    @post("/tenants/{tenant_id:str}/credits", include_in_schema=False, status_code=303, guards=[session.may_bill])
    async def add_credit(
        self, request: Request[Any, Any, Any], tenant_id: str, data: Form, db_session: AsyncSession,
        db_engine: AsyncEngine, settings: Settings,
    ) -> Redirect | Template:  # fmt: skip
        who, actor = await forms.operator(request)
        try:
            amount = forms.required_integer(data, "amount", "Amount")
            note = forms.text(data, "note", "Note", required=False)
            await accounts.add_credit(db_engine, actor, tenant_id, CreditCreate(amount=amount, note=note))
        except forms.REFUSALS as exc:
            return await views.tenant(request, db_engine, settings, tenant_id, **forms.refusal(exc))
        return await forms.done(db_session, who, f"Credit of {amount:,} minor units added.",
                                f"/admin/dashboard/tenants/{tenant_id}")  # fmt: skip
