"""POST /webhooks/stripe: the raw body and its Stripe-Signature go to billing, which verifies and applies."""

from __future__ import annotations

from typing import Any

from litestar import Request, post
from sqlalchemy.ext.asyncio import AsyncEngine

from billing import stripe_webhooks
from gateway.audit import service as audit
from gateway.audit.service import Actor
from gateway.payments import dunning
from gateway.settings import Settings


@post("/webhooks/stripe", status_code=200, tags=["Billing"], include_in_schema=False)
async def stripe_webhook(request: Request[Any, Any, Any], db_engine: AsyncEngine, settings: Settings) -> dict[str, Any]:
    """Stripe events, signature verified (400 otherwise); invoice.paid marks our invoice paid, top-ups credit."""
    event = stripe_webhooks.verify(await request.body(), request.headers.get("stripe-signature"), settings.billing)
    async with db_engine.begin() as conn:
        answer = await stripe_webhooks.apply(conn, event)
        if refused := answer.get("refused"):  # a payment we did not credit: an operator must act on it
            actor = Actor.of(request, "stripe")
            await audit.record(conn, actor, "billing.topup_refused", refused["stripe_invoice_id"], refused)
        if answer["handled"] == "invoice_paid":  # paying an overdue invoice resumes its tenant at once
            await dunning.invoice_paid(conn, (event.get("data") or {}).get("object") or {})
    return answer
