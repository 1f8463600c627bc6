"""Stripe webhooks: verify the signature, then mark our invoices paid and credit prepaid top-ups, once each.

Stripe delivers at least once and sends both `invoice.paid` and `invoice.payment_succeeded` for one payment,
so every effect is keyed on the Stripe invoice id: a payment entry `stripe-paid-<in_…>`, a credit entry
`stripe-topup-<in_…>` (the ledger's unique idempotency key), and an invoice turns paid only from open.

A top-up credits what Stripe says was paid (`amount_paid`), never what the invoice's metadata asked for, and only
in the tenant's billing currency. A top-up paid in another currency (or paid nothing) is refused: logged as an
error, no credit, and answered 200 with `handled: "topup_refused"` and the reason, for the caller to record.
Not 4xx: the event is genuine and will never change, and Stripe retries any non-2xx answer for days (and warns
of, then disables, an endpoint that keeps failing); the refusal needs a person, not a retry.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import sqlalchemy as sa
import stripe
from sqlalchemy.ext.asyncio import AsyncConnection

from billing import payment_events
from billing.errors import InvalidBillingInput, UnknownAccount
from billing.ledger import ACCOUNTS, INVOICES, add_entry
from billing.settings import BillingSettings

log = logging.getLogger(__name__)
TOLERANCE_SECONDS = 300
PAID_EVENTS = frozenset({"invoice.paid", "invoice.payment_succeeded"})


def verify(payload: bytes, signature: str | None, settings: BillingSettings) -> dict[str, Any]:
    """The event, if `Stripe-Signature` proves it came from Stripe in the last 5 minutes; else 400."""
    if settings.stripe_webhook_secret is None:
        raise InvalidBillingInput("Stripe webhooks are not configured (STRIPE_WEBHOOK_SECRET is not set).")
    if not signature:
        raise InvalidBillingInput("Missing Stripe-Signature header.", param="Stripe-Signature")
    try:
        text = payload.decode("utf-8")
        stripe.WebhookSignature.verify_header(
            text, signature, settings.stripe_webhook_secret.get_secret_value(), TOLERANCE_SECONDS
        )
        event = json.loads(text)
    except stripe.SignatureVerificationError as exc:
        raise InvalidBillingInput(f"Invalid Stripe signature: {exc.user_message or exc}.") from exc
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidBillingInput("The webhook body is not JSON.") from exc
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise InvalidBillingInput("The webhook body is not a Stripe event.")
    return event


async def apply(conn: AsyncConnection, event: dict[str, Any]) -> dict[str, Any]:
    """Apply a verified event in the caller's transaction; unknown events and others' invoices are ignored."""
    if not await payment_events.first_time(conn, event):
        return {"received": True, "id": event.get("id"), "type": event["type"], "handled": "duplicate"}
    obj = (event.get("data") or {}).get("object") or {}
    handled, refused = None, None
    if event["type"] in payment_events.TYPES:
        handled = await payment_events.apply(conn, event["type"], obj)
    elif event["type"] in PAID_EVENTS and obj.get("object") == "invoice" and obj.get("id"):
        meta = obj.get("metadata") or {}
        if meta.get("kind") == "topup":
            refused = await _credit_top_up(conn, obj, meta)
            handled = "topup_refused" if refused else "topup_credited"
        else:
            handled = await _mark_paid(conn, obj, meta)
    if handled is None:
        log.info("Stripe event %s (%s) ignored", event.get("id"), event["type"])
    await payment_events.mark(conn, event, handled)
    answer = {"received": True, "id": event.get("id"), "type": event["type"], "handled": handled}
    if refused is not None:
        answer["refused"] = refused
    return answer


async def _mark_paid(conn: AsyncConnection, obj: dict[str, Any], meta: dict[str, Any]) -> str | None:
    stripe_id = str(obj["id"])
    ours = sa.or_(INVOICES.c.stripe_invoice_id == stripe_id, INVOICES.c.id == str(meta.get("lgw_invoice_id", "")))
    inv = (await conn.execute(sa.select(INVOICES).where(ours).limit(1))).first()
    if inv is None:
        return None
    await conn.execute(
        sa.update(INVOICES).where(INVOICES.c.id == inv.id, INVOICES.c.status == "open").values(status="paid")
    )
    amount = int(obj.get("amount_paid") or 0) or inv.total_minor
    if amount > 0:
        await add_entry(conn, inv.tenant_id, "payment", amount, f"Stripe {stripe_id} paid {inv.id}",
                        idempotency_key=f"stripe-paid-{stripe_id}")  # fmt: skip
    return "invoice_paid"


async def _credit_top_up(conn: AsyncConnection, obj: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any] | None:
    """Credit the amount paid, in the tenant's billing currency; else no credit and why (None: credited)."""
    if not meta.get("tenant_id"):
        raise InvalidBillingInput("A top-up invoice needs metadata tenant_id.")
    tenant_id, stripe_id = str(meta["tenant_id"]), str(obj["id"])
    account = sa.select(ACCOUNTS.c.currency).where(ACCOUNTS.c.tenant_id == tenant_id)
    currency = (await conn.execute(account)).scalar_one_or_none()
    if currency is None:
        raise UnknownAccount(f"No billing account for tenant {tenant_id!r}.")
    paid, paid_in = obj.get("amount_paid"), str(obj.get("currency") or "").lower()
    refused = {"tenant_id": tenant_id, "stripe_invoice_id": stripe_id, "amount_paid": paid, "currency": paid_in,
               "billing_currency": currency}  # fmt: skip
    if paid_in != currency.lower():
        log.error("Stripe top-up %s of tenant %s paid in %r, not the billing currency %r: NOT credited",
                  stripe_id, tenant_id, paid_in, currency)  # fmt: skip
        return {**refused, "reason": "currency"}
    if not isinstance(paid, int) or isinstance(paid, bool) or paid <= 0:
        log.error("Stripe top-up %s of tenant %s paid %r: NOT credited", stripe_id, tenant_id, paid)
        return {**refused, "reason": "amount_paid"}
    if str(meta.get("amount", paid)) != str(paid):
        log.warning("Stripe top-up %s: metadata amount %r, paid %d: crediting what was paid",
                    stripe_id, meta.get("amount"), paid)  # fmt: skip
    await add_entry(conn, tenant_id, "credit", paid, f"Stripe top-up {stripe_id}",
                    idempotency_key=f"stripe-topup-{stripe_id}")  # fmt: skip
    return None
