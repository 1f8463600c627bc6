"""Postpaid collection: a closed invoice, once in Stripe, is charged to the card on file (charge_automatically)
or, for a tenant without a card, sent with `days_until_due` (Stripe e-mails the hosted invoice page).

Our invoice keeps how it is collected and its due date, which is what dunning counts from. A collection is
made once per invoice (our row says it was, and the Stripe calls carry idempotency keys); a declined card is
recorded on the invoice and told to the tenant, not retried here (Stripe's own retries and the webhook follow).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
import stripe
from sqlalchemy.ext.asyncio import AsyncEngine

from billing import payments
from billing.errors import PaymentDeclined, StripeRejected
from billing.ledger import ACCOUNTS, INVOICES
from billing.settings import BillingSettings
from billing.stripe_api import call

log = logging.getLogger(__name__)


async def collect(
    db: AsyncEngine, client: stripe.StripeClient, invoice_id: str, stripe_invoice_id: str, settings: BillingSettings
) -> str | None:
    """Collect our invoice `invoice_id` (already Stripe's `stripe_invoice_id`); the method used, None if done."""
    async with db.connect() as conn:
        inv = (await conn.execute(sa.select(INVOICES).where(INVOICES.c.id == invoice_id))).one()
        card_of = sa.select(ACCOUNTS.c.stripe_payment_method_id).where(ACCOUNTS.c.tenant_id == inv.tenant_id)
        card = (await conn.execute(card_of)).scalar()
    if inv.collection_method is not None or inv.total_minor <= 0:
        return None
    now = datetime.now(UTC)
    error: str | None = None
    if card:
        method, due = "charge_automatically", now
        try:
            opts: Any = {"idempotency_key": f"lgw-pay-{invoice_id}"}
            paid = await payments.paying(client.v1.invoices.pay_async(stripe_invoice_id, options=opts))
            if paid.status != "paid":  # (Stripe raises a card error; localstripe answers with an open invoice)
                error = await _why_unpaid(client, paid.to_dict())
        except PaymentDeclined as exc:
            error = exc.message
        except StripeRejected as exc:
            error = exc.message
            log.warning("collecting %s (%s) by card: %s", invoice_id, stripe_invoice_id, exc.message)
    else:
        method, due = "send_invoice", now + timedelta(days=settings.days_until_due)
        try:
            params: Any = {"collection_method": "send_invoice", "days_until_due": settings.days_until_due}
            await call(client.v1.invoices.update_async(stripe_invoice_id, params))
            await call(client.v1.invoices.finalize_invoice_async(stripe_invoice_id))
            await call(client.v1.invoices.send_invoice_async(stripe_invoice_id))
        except StripeRejected as exc:  # (localstripe knows neither days_until_due nor sending)
            error = exc.message
            log.warning("sending %s (%s) to the tenant: %s", invoice_id, stripe_invoice_id, exc.message)
    async with db.begin() as conn:
        values = {"collection_method": method, "due_at": due, "payment_error": error}
        await conn.execute(sa.update(INVOICES).where(INVOICES.c.id == invoice_id).values(values))
        if error and card:
            message = f"Payment of invoice {invoice_id} ({inv.period}) by card failed: {error}"
            await payments.notify(conn, inv.tenant_id, "invoice_payment_failed", message, invoice_id)
    return method


async def _why_unpaid(client: stripe.StripeClient, invoice: dict[str, Any]) -> str:
    pi_id = invoice.get("payment_intent")
    if isinstance(pi_id, str):
        reason = payments.payment_error(await payments.read_payment(client, pi_id))
        if reason:
            return reason
    return f"The card payment did not go through (the invoice is {invoice.get('status')})."
