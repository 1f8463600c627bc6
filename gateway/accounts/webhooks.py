"""POST /webhooks/stripe: the raw body and its Stripe-Signature go to billing, which verifies and applies."""

from __future__ import annotations

from typing import Any

from litestar import Request, post
from sqlalchemy.ext.asyncio import AsyncEngine

from billing import stripe_webhooks
from gateway.payments import dunning
from gateway.settings import Settings


@post("/webhooks/stripe", status_code=200, tags=["Billing"], include_in_schema=False)
async def stripe_webhook(request: Request[Any, Any, Any], db_engine: AsyncEngine, settings: Settings) -> dict[str, Any]:
    """Stripe events, signature verified (400 otherwise); invoice.paid marks our invoice paid, top-ups credit."""
    event = stripe_webhooks.verify(await request.body(), request.headers.get("stripe-signature"), settings.billing)
    async with db_engine.begin() as conn:
        result = await stripe_webhooks.apply(conn, event)
        if result["handled"] == "invoice_paid":  # paying an overdue invoice resumes its tenant at once
            await dunning.invoice_paid(conn, (event.get("data") or {}).get("object") or {})
        return result
