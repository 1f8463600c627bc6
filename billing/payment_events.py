"""The payment side of Stripe's webhook: each event applied once (its id stored), in any order.

PaymentIntent events go to `payments.settle` (which never moves a payment back from succeeded), refunds and
disputes to their handlers, a failed invoice payment is recorded on our invoice and told to the tenant.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from billing import payments
from billing.ledger import INVOICES
from billing.models import StripeEvent

EVENTS = StripeEvent.__table__  # type: ignore[attr-defined]
PAYMENT_INTENT_EVENTS = frozenset(
    {"payment_intent.succeeded", "payment_intent.payment_failed", "payment_intent.canceled",
     "payment_intent.processing", "payment_intent.requires_action"}
)  # fmt: skip
TYPES = PAYMENT_INTENT_EVENTS | {"charge.refunded", "charge.dispute.created", "invoice.payment_failed"}


async def first_time(conn: AsyncConnection, event: dict[str, Any]) -> bool:
    """Store the event's id; False if it was applied before (a redelivery)."""
    if not event.get("id"):
        return True
    row = {"id": str(event["id"]), "type": str(event["type"]), "received_at": datetime.now(UTC)}
    stmt = insert(EVENTS).values(row).on_conflict_do_nothing(index_elements=["id"]).returning(EVENTS.c.id)
    return (await conn.execute(stmt)).first() is not None


async def mark(conn: AsyncConnection, event: dict[str, Any], handled: str | None) -> None:
    if event.get("id") and handled:
        await conn.execute(sa.update(EVENTS).where(EVENTS.c.id == str(event["id"])).values(handled=handled))


async def apply(conn: AsyncConnection, type_: str, obj: dict[str, Any]) -> str | None:
    if type_ in PAYMENT_INTENT_EVENTS and obj.get("object") == "payment_intent" and obj.get("id"):
        if obj.get("invoice"):  # an invoice's own payment: the invoice events handle it
            return None
        return await payments.settle(conn, obj)
    if type_ == "charge.refunded" and obj.get("object") == "charge":
        return await payments.refund(conn, obj)
    if type_ == "charge.dispute.created" and obj.get("object") == "dispute" and obj.get("id"):
        return await payments.dispute(conn, obj)
    if type_ == "invoice.payment_failed" and obj.get("object") == "invoice" and obj.get("id"):
        return await invoice_failed(conn, obj)
    return None


async def invoice_failed(conn: AsyncConnection, obj: dict[str, Any]) -> str | None:
    meta = obj.get("metadata") or {}
    ours = sa.or_(INVOICES.c.stripe_invoice_id == str(obj["id"]), INVOICES.c.id == str(meta.get("lgw_invoice_id", "")))
    inv = (await conn.execute(sa.select(INVOICES).where(ours).limit(1))).first()
    if inv is None:
        return None
    error = (obj.get("last_finalization_error") or {}).get("message") or "Stripe could not collect the payment."
    await conn.execute(sa.update(INVOICES).where(INVOICES.c.id == inv.id).values(payment_error=str(error)[:1000]))
    where = obj.get("hosted_invoice_url") or "the console's Billing page"
    message = f"Payment of invoice {inv.id} ({inv.period}) failed: {error} Pay it from {where}."
    await payments.notify(conn, inv.tenant_id, "invoice_payment_failed", message, inv.id)
    return "invoice_payment_failed"
