"""The only billing code that talks to Stripe: one invoice pushed as invoice items plus an invoice.

Why a $0 subscription per customer: an invoice made by `invoices.create` for a customer must pick up the
invoice items we just created. We create each tenant's items and invoice under one $0/month
pay-as-you-go subscription (created once, with an idempotency key) and ask for
`pending_invoice_items_behavior="include"`. On real Stripe that invoice contains exactly the subscription's
pending items and leaves the subscription's own cycle alone; localstripe, which answers `invoices.create`
without a subscription with 404 "No upcoming invoices", builds the same invoice the same way. Nothing here
knows which of the two it talks to. The subscription costs nothing; its monthly $0 invoices are not ours and
the webhook ignores them.

Every write carries an idempotency key made of our ids, and before writing we look for what an earlier try
may already have made (our ids are in each object's metadata), so a retry after a lost answer makes nothing
twice — even after Stripe forgets the key (24 h) or on a server that ignores keys.

Errors leave as billing errors: StripeUnavailable (connection, timeout, 429, 5xx: retry later) or
StripeRejected (any other refusal: also retried later, but someone has to look).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import stripe
from stripe import RequestOptions

from billing.errors import StripeRejected, StripeUnavailable
from billing.settings import BillingSettings

T = TypeVar("T")
PRODUCT_NAME = "LoRA gateway usage"
_LOOKBACK = 20  # how many of a customer's newest invoices to search for one an earlier try created


@dataclass(frozen=True)
class InvoiceToPush:
    id: str
    tenant_id: str
    period: str
    currency: str
    lines: list[dict[str, Any]]


@asynccontextmanager
async def stripe_client(settings: BillingSettings) -> AsyncIterator[stripe.StripeClient]:
    """A StripeClient on an async httpx client, pointed at STRIPE_API_BASE when set."""
    if settings.stripe_api_key is None:
        raise StripeRejected("STRIPE_API_KEY is not set.")
    http = stripe.HTTPXClient(timeout=settings.stripe_timeout_seconds)
    client = stripe.StripeClient(
        settings.stripe_api_key.get_secret_value(),
        base_addresses={"api": settings.stripe_api_base} if settings.stripe_api_base else None,
        http_client=http,
        max_network_retries=settings.stripe_network_retries,
    )
    try:
        yield client
    finally:
        await http.close_async()


def translate(exc: stripe.StripeError) -> StripeUnavailable | StripeRejected:
    """A Stripe error as a billing error: unavailable (retry later) or rejected."""
    if isinstance(exc, (stripe.APIConnectionError, stripe.RateLimitError, stripe.APIError)):
        return StripeUnavailable(f"Stripe unavailable: {type(exc).__name__}: {exc.user_message or exc}")
    return StripeRejected(f"Stripe refused: {type(exc).__name__}: {exc.user_message or exc}")


async def call(request: Awaitable[T]) -> T:
    """Await one Stripe call, translating its errors at this boundary."""
    try:
        return await request
    except stripe.StripeError as exc:
        raise translate(exc) from exc


def _opts(key: str) -> RequestOptions:
    return {"idempotency_key": key}


async def create_customer(client: stripe.StripeClient, tenant_id: str) -> str:
    params: Any = {"description": f"LoRA gateway tenant {tenant_id}", "metadata": {"lgw_tenant_id": tenant_id}}
    customer = await call(client.v1.customers.create_async(params, _opts(f"lgw-cus-{tenant_id}")))
    return str(customer.id)


async def ensure_plan(client: stripe.StripeClient, currency: str) -> str:
    """The shared $0 monthly plan (a fixed id, so there is only ever one per currency); a read first."""
    plan_id = f"lgw-payg-{currency}"
    try:
        await client.v1.plans.retrieve_async(plan_id)
        return plan_id
    except stripe.InvalidRequestError as exc:
        if exc.http_status != 404:
            raise translate(exc) from exc
    except stripe.StripeError as exc:
        raise translate(exc) from exc
    params: Any = {"id": plan_id, "amount": 0, "currency": currency, "interval": "month",
                   "nickname": "pay as you go", "product": {"name": PRODUCT_NAME}}  # fmt: skip
    await call(client.v1.plans.create_async(params, _opts(f"lgw-plan-{currency}")))
    return plan_id


async def create_subscription(client: stripe.StripeClient, customer_id: str, tenant_id: str, plan_id: str) -> str:
    params: Any = {"customer": customer_id, "items": [{"plan": plan_id}], "metadata": {"lgw_tenant_id": tenant_id}}
    sub = await call(client.v1.subscriptions.create_async(params, _opts(f"lgw-sub-{customer_id}")))
    return str(sub.id)


def _line_key(line_meta: dict[str, Any]) -> tuple[str, str] | None:
    if "lgw_invoice_id" in line_meta and "lgw_line" in line_meta:
        return str(line_meta["lgw_invoice_id"]), str(line_meta["lgw_line"])
    return None


async def _already_invoiced(client: stripe.StripeClient, customer_id: str, invoice_id: str) -> str | None:
    """The Stripe invoice an earlier try made for ours, if any (found by our ids in its metadata)."""
    params: Any = {"customer": customer_id, "limit": _LOOKBACK}
    found = await call(client.v1.invoices.list_async(params))
    for inv in found.to_dict()["data"]:
        if (inv.get("metadata") or {}).get("lgw_invoice_id") == invoice_id:
            return str(inv["id"])
        for line in (inv.get("lines") or {}).get("data", []):
            key = _line_key(line.get("metadata") or {})
            if key is not None and key[0] == invoice_id:
                return str(inv["id"])
    return None


async def _pending_lines(client: stripe.StripeClient, customer_id: str, invoice_id: str) -> set[str]:
    """Indexes of our lines that are already pending invoice items in Stripe."""
    items = await call(client.v1.invoice_items.list_async({"customer": customer_id, "limit": 100}))
    done = set()
    for item in items.to_dict()["data"]:
        key = _line_key(item.get("metadata") or {})
        if item.get("invoice") is None and key is not None and key[0] == invoice_id:
            done.add(key[1])
    return done


def describe(line: dict[str, Any], period: str) -> str:
    return (
        f"{line['model']} {period}: {line['prompt_tokens']:,} prompt + {line['completion_tokens']:,} completion "
        f"tokens, {line['requests']:,} requests"
    )


async def push_invoice(
    client: stripe.StripeClient, inv: InvoiceToPush, customer_id: str, sub_id: str, auto_advance: bool
) -> str:
    """Our invoice as one Stripe invoice item per line plus the invoice; returns the Stripe invoice id.

    With `auto_advance` Stripe finalises the draft about an hour later and collects it; without, the draft
    waits for someone to finalise it (invoices made through the API do not advance by default).
    """
    existing = await _already_invoiced(client, customer_id, inv.id)
    if existing is not None:
        return existing
    pending = await _pending_lines(client, customer_id, inv.id)
    for index, line in enumerate(inv.lines):
        if str(index) in pending:
            continue
        meta = {"lgw_invoice_id": inv.id, "lgw_line": str(index), "lgw_tenant_id": inv.tenant_id,
                "lgw_period": inv.period, "model": line["model"]}  # fmt: skip
        params: Any = {"customer": customer_id, "subscription": sub_id, "amount": line["amount_minor"],
                       "currency": inv.currency, "description": describe(line, inv.period),
                       "metadata": meta}  # fmt: skip
        await call(client.v1.invoice_items.create_async(params, _opts(f"lgw-ii-{inv.id}-{index}")))
    ids = {"lgw_invoice_id": inv.id, "lgw_tenant_id": inv.tenant_id, "lgw_period": inv.period}
    invoice: dict[str, Any] = {"customer": customer_id, "subscription": sub_id, "metadata": ids,
                               "pending_invoice_items_behavior": "include",
                               "description": f"LoRA gateway usage {inv.period}"}  # fmt: skip
    if auto_advance:
        invoice["auto_advance"] = True
    created = await call(client.v1.invoices.create_async(cast(Any, invoice), _opts(f"lgw-in-{inv.id}")))
    return str(created.id)
