"""The tenant's payments: what a Billing page with Stripe.js needs, each change audited in its transaction."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from billing import auto_recharge, payments
from billing.errors import InvalidBillingInput
from billing.ledger import ACCOUNTS, balance
from billing.settings import BillingSettings
from billing.stripe_api import stripe_client
from gateway.accounts.schemas import balance_json
from gateway.audit.service import Actor, record

CREDITED = ("credited", "already_credited")


def config(settings: BillingSettings) -> dict[str, Any]:
    """What a Billing page needs; `enabled` false (and no keys) when this gateway takes no payments."""
    enabled = settings.stripe_api_key is not None
    return {
        "object": "billing_config",
        "enabled": enabled,
        "publishable_key": settings.stripe_publishable_key if enabled else None,
        "stripe_js_url": settings.stripe_js_url if enabled else None,
        "currency": settings.currency,
        "topup": {"min": settings.topup_min_minor, "max": settings.topup_max_minor},
    }


async def setup_intent(db: AsyncEngine, settings: BillingSettings, tenant_id: str) -> dict[str, Any]:
    payments.require_stripe(settings)
    async with stripe_client(settings) as client:
        customer = await payments.customer_of(db, client, tenant_id)
        return await payments.setup_intent(client, customer, tenant_id)


async def list_cards(db: AsyncEngine, settings: BillingSettings, tenant_id: str) -> dict[str, Any]:
    payments.require_stripe(settings)
    async with db.connect() as conn:
        acc = await payments.account(conn, tenant_id)
    async with stripe_client(settings) as client:
        found = await payments.cards(client, acc.stripe_customer_id, acc.stripe_payment_method_id)
    return {"object": "list", "data": [c.json() for c in found]}


async def save_card(
    db: AsyncEngine, settings: BillingSettings, tenant_id: str, setup_intent: str | None, pm: str | None, actor: Actor
) -> dict[str, Any]:
    """The card a SetupIntent confirmed becomes the card on file (replacing the one before)."""
    payments.require_stripe(settings)
    async with stripe_client(settings) as client:
        customer = await payments.customer_of(db, client, tenant_id)
        saved = await payments.card_to_save(client, customer, setup_intent, pm)
    async with db.begin() as conn:
        await conn.execute(
            sa.update(ACCOUNTS).where(ACCOUNTS.c.tenant_id == tenant_id).values(stripe_payment_method_id=saved)
        )
        await record(conn, actor, "billing.card_saved", tenant_id, {"payment_method": saved})
    return await list_cards(db, settings, tenant_id)


async def remove_card(
    db: AsyncEngine, settings: BillingSettings, tenant_id: str, pm: str, actor: Actor
) -> dict[str, Any]:
    payments.require_stripe(settings)
    async with db.connect() as conn:
        acc = await payments.account(conn, tenant_id)
    async with stripe_client(settings) as client:
        await payments.remove_card(client, acc.stripe_customer_id, pm)
    async with db.begin() as conn:
        if acc.stripe_payment_method_id == pm:
            await conn.execute(
                sa.update(ACCOUNTS).where(ACCOUNTS.c.tenant_id == tenant_id).values(stripe_payment_method_id=None)
            )
            if acc.auto_recharge_enabled:
                await auto_recharge.disable(conn, tenant_id, "The card on file was removed.")
        await record(conn, actor, "billing.card_removed", tenant_id, {"payment_method": pm})
    return {"object": "payment_method", "id": pm, "deleted": True}


async def create_topup(
    db: AsyncEngine, settings: BillingSettings, tenant_id: str, amount: int, pm: str | None, actor: Actor
) -> dict[str, Any]:
    """A PaymentIntent for `amount`: confirmed now with the card on file ("default") or a given pm_…, else
    returned for Stripe.js to confirm with a new card. Credited when Stripe says it succeeded, once."""
    payments.require_stripe(settings)
    async with db.connect() as conn:
        acc = await payments.account(conn, tenant_id)
    if acc.mode != "prepaid":
        raise InvalidBillingInput(
            "Top-ups are for prepaid accounts: this account is postpaid, its usage is invoiced after each period.",
            param="amount",
        )
    payments.check_amount(amount, settings)
    if pm == "default":
        if acc.stripe_payment_method_id is None:
            raise InvalidBillingInput("There is no card on file: add one first.", param="payment_method")
        pm = acc.stripe_payment_method_id
    async with stripe_client(settings) as client:
        customer = await payments.customer_of(db, client, tenant_id)
        if pm and pm != acc.stripe_payment_method_id:
            await payments.attach(client, customer, pm)
        pi = await payments.create_payment(client, tenant_id=tenant_id, customer=customer, amount=amount,
                                           currency=acc.currency, purpose="topup", payment_method=pm)  # fmt: skip
    async with db.begin() as conn:
        outcome = await payments.settle(conn, pi)
        detail = {"payment_intent": pi["id"], "amount": amount, "status": pi.get("status")}
        await record(conn, actor, "billing.topup", tenant_id, detail)
    return await topup_json(db, pi, outcome)


async def refresh_topup(db: AsyncEngine, settings: BillingSettings, tenant_id: str, pi_id: str) -> dict[str, Any]:
    """Read the PaymentIntent back from Stripe (the browser came back) and credit it if it has succeeded."""
    payments.require_stripe(settings)
    async with db.connect() as conn:
        owner_of = sa.select(payments.PAYMENTS.c.tenant_id).where(payments.PAYMENTS.c.id == pi_id)
        owner = (await conn.execute(owner_of)).scalar()
    if owner is not None and owner != tenant_id:
        raise payments.UnknownPayment(f"No top-up {pi_id!r}.", param="id")
    async with stripe_client(settings) as client:
        pi = await payments.read_payment(client, pi_id)
    if (pi.get("metadata") or {}).get("lgw_tenant_id") != tenant_id:
        raise payments.UnknownPayment(f"No top-up {pi_id!r}.", param="id")
    async with db.begin() as conn:
        outcome = await payments.settle(conn, pi)
    return await topup_json(db, pi, outcome)


async def topup_json(db: AsyncEngine, pi: dict[str, Any], outcome: str | None) -> dict[str, Any]:
    async with db.connect() as conn:
        row = (await conn.execute(sa.select(payments.PAYMENTS).where(payments.PAYMENTS.c.id == pi["id"]))).first()
        tenant = row.tenant_id if row else None
        bal = balance_json(await balance(conn, tenant)) if tenant else None
    return {
        "object": "topup",
        "id": pi["id"],
        "client_secret": pi.get("client_secret"),
        "status": pi.get("status"),
        "amount": pi.get("amount"),
        "currency": pi.get("currency"),
        "credited": bool(row and row.credited) or outcome in CREDITED,
        "error": (row.error if row else None) or payments.payment_error(pi),
        "balance": bal,
    }


async def get_auto_recharge(db: AsyncEngine, tenant_id: str) -> dict[str, Any]:
    async with db.connect() as conn:
        return auto_recharge.config_json(await auto_recharge.read(conn, tenant_id))


async def put_auto_recharge(
    db: AsyncEngine, settings: BillingSettings, tenant_id: str, enabled: bool, threshold: int, amount: int, actor: Actor
) -> dict[str, Any]:
    payments.require_stripe(settings)
    bounds = (settings.topup_min_minor, settings.topup_max_minor)
    async with db.begin() as conn:
        row = await auto_recharge.configure(conn, tenant_id, enabled, threshold, amount, bounds)
        detail = {"enabled": enabled, "threshold": threshold, "amount": amount}
        await record(conn, actor, "billing.auto_recharge", tenant_id, detail)
    return auto_recharge.config_json(row)


async def notices(db: AsyncEngine, tenant_id: str, limit: int = 50) -> dict[str, Any]:
    stmt = (
        sa.select(payments.NOTICES)
        .where(payments.NOTICES.c.tenant_id == tenant_id)
        .order_by(payments.NOTICES.c.id.desc())
        .limit(min(max(limit, 1), 500))
    )
    async with db.connect() as conn:
        rows = (await conn.execute(stmt)).all()
    return {"object": "list", "data": [_notice(r) for r in rows]}


def _notice(r: Any) -> dict[str, Any]:
    return {"object": "billing_notice", "id": r.id, "kind": r.kind, "message": r.message, "ref": r.ref,
            "created_at": int(r.created_at.timestamp())}  # fmt: skip
