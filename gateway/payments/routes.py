"""Payments API: the tenant's card, top-ups, auto-recharge and notices; the operator's disputes and waivers."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from litestar import Controller, Request, delete, get, post, put
from sqlalchemy.ext.asyncio import AsyncEngine

from billing import payments
from gateway.admin.guard import admin_guard
from gateway.audit.service import Actor
from gateway.auth.dependencies import provide_paying_caller
from gateway.auth.service import Caller
from gateway.payments import dunning, service
from gateway.payments.schemas import AutoRecharge, CardSave, TopupCreate
from gateway.settings import Settings


def _actor(request: Request[Any, Any, Any], caller: Caller) -> Actor:
    return Actor.of(request, caller.key_id)


class PaymentsController(Controller):
    path = "/v1/billing"
    tags = ["Billing"]
    dependencies = {"caller": provide_paying_caller}  # an overdue tenant can still pay

    @get("/config")
    async def config(self, caller: Caller, settings: Settings) -> dict[str, Any]:
        """What a Billing page needs to load Stripe.js: publishable key, Stripe.js address, top-up bounds."""
        return service.config(settings.billing)

    @post("/setup-intents", status_code=201)
    async def setup_intent(self, caller: Caller, db_engine: AsyncEngine, settings: Settings) -> dict[str, Any]:
        """A SetupIntent whose client_secret Stripe.js confirms with the card (the card never reaches us)."""
        return await service.setup_intent(db_engine, settings.billing, caller.tenant_id)

    @get("/payment-methods")
    async def payment_methods(self, caller: Caller, db_engine: AsyncEngine, settings: Settings) -> dict[str, Any]:
        return await service.list_cards(db_engine, settings.billing, caller.tenant_id)

    @post("/payment-methods", status_code=201)
    async def save_card(
        self,
        request: Request[Any, Any, Any],
        caller: Caller,
        data: CardSave,
        db_engine: AsyncEngine,
        settings: Settings,
    ) -> dict[str, Any]:
        """The card of a confirmed SetupIntent becomes the card on file."""
        return await service.save_card(
            db_engine,
            settings.billing,
            caller.tenant_id,
            data.setup_intent,
            data.payment_method,
            _actor(request, caller),
        )

    @delete("/payment-methods/{payment_method_id:str}", status_code=200)
    async def remove_card(
        self,
        request: Request[Any, Any, Any],
        caller: Caller,
        payment_method_id: str,
        db_engine: AsyncEngine,
        settings: Settings,
    ) -> dict[str, Any]:
        actor = _actor(request, caller)
        return await service.remove_card(db_engine, settings.billing, caller.tenant_id, payment_method_id, actor)

    @post("/topups", status_code=201)
    async def topup(
        self,
        request: Request[Any, Any, Any],
        caller: Caller,
        data: TopupCreate,
        db_engine: AsyncEngine,
        settings: Settings,
    ) -> dict[str, Any]:
        """A PaymentIntent for `amount` (minor units): paid now with a card, or confirmed by Stripe.js."""
        actor = _actor(request, caller)
        return await service.create_topup(
            db_engine, settings.billing, caller.tenant_id, data.amount, data.payment_method, actor
        )

    @get("/topups/{topup_id:str}")
    async def get_topup(
        self, caller: Caller, topup_id: str, db_engine: AsyncEngine, settings: Settings
    ) -> dict[str, Any]:
        """The top-up as Stripe has it now; credited here if it succeeded and the webhook has not come yet."""
        return await service.refresh_topup(db_engine, settings.billing, caller.tenant_id, topup_id)

    @post("/topups/{topup_id:str}/refresh", status_code=200)
    async def refresh_topup(
        self, caller: Caller, topup_id: str, db_engine: AsyncEngine, settings: Settings
    ) -> dict[str, Any]:
        return await service.refresh_topup(db_engine, settings.billing, caller.tenant_id, topup_id)

    @get("/auto-recharge")
    async def get_auto_recharge(self, caller: Caller, db_engine: AsyncEngine) -> dict[str, Any]:
        return await service.get_auto_recharge(db_engine, caller.tenant_id)

    @put("/auto-recharge")
    async def put_auto_recharge(
        self,
        request: Request[Any, Any, Any],
        caller: Caller,
        data: AutoRecharge,
        db_engine: AsyncEngine,
        settings: Settings,
    ) -> dict[str, Any]:
        """Charge the card on file for `amount` whenever the credit falls below `threshold` (minor units)."""
        return await service.put_auto_recharge(
            db_engine, settings.billing, caller.tenant_id, data.enabled, data.threshold, data.amount,
            _actor(request, caller),
        )  # fmt: skip

    @get("/notices")
    async def notices(self, caller: Caller, db_engine: AsyncEngine, limit: int = 50) -> dict[str, Any]:
        """Failed payments, auto-recharge turned off, suspensions: newest first."""
        return await service.notices(db_engine, caller.tenant_id, limit)


class AdminPaymentsController(Controller):
    path = "/admin"
    guards = [admin_guard]
    tags = ["Admin", "Billing"]

    @get("/billing/disputes")
    async def disputes(self, db_engine: AsyncEngine) -> dict[str, Any]:
        async with db_engine.connect() as conn:
            rows = await conn.execute(sa.select(payments.DISPUTES).order_by(payments.DISPUTES.c.created_at.desc()))
            return {"object": "list", "data": [_row(r) for r in rows]}

    @get("/billing/payments")
    async def payments_list(self, db_engine: AsyncEngine, tenant_id: str | None = None) -> dict[str, Any]:
        """Top-ups and auto-recharges with their Stripe status and whether they were credited."""
        stmt = sa.select(payments.PAYMENTS).order_by(payments.PAYMENTS.c.created_at.desc()).limit(1000)
        if tenant_id:
            stmt = stmt.where(payments.PAYMENTS.c.tenant_id == tenant_id)
        async with db_engine.connect() as conn:
            return {"object": "list", "data": [_row(r) for r in await conn.execute(stmt)]}

    @post("/invoices/{invoice_id:str}/waive", status_code=200)
    async def waive(self, request: Request[Any, Any, Any], invoice_id: str, db_engine: AsyncEngine) -> dict[str, Any]:
        """Dunning leaves this invoice alone from now on; its tenant resumes if nothing else holds it."""
        async with db_engine.begin() as conn:
            return await dunning.waive(conn, invoice_id, Actor.of(request))

    @post("/billing/dunning/run", status_code=200)
    async def run_dunning(self, db_engine: AsyncEngine, settings: Settings) -> dict[str, Any]:
        """Run the overdue-invoice check now (it also runs on BILLING_DUNNING_SCHEDULE)."""
        return {"object": "dunning_run", "suspended": await dunning.check(db_engine, settings.billing)}


def _row(r: Any) -> dict[str, Any]:
    return {k: (int(v.timestamp()) if hasattr(v, "timestamp") else v) for k, v in r._mapping.items()}
