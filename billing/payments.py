"""Money in through Stripe: a card on file (SetupIntent), top-ups and auto-recharges (PaymentIntents).

A PaymentIntent is credited by exactly one ledger entry whose idempotency key is the PaymentIntent's id.
`settle` is the one place that writes it; the webhook, a read-back by the tenant and the auto-recharge job all
call it, whichever comes first: it locks our row of the PaymentIntent, so the second finds the credit made.
What is credited is what Stripe received (`amount_received`) in the account's currency; a payment in another
currency is recorded with the reason and not credited (someone has to look: it is logged as an error).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa
import stripe
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from billing import auto_recharge
from billing.errors import InvalidBillingInput, PaymentDeclined, StripeNotConfigured, UnknownAccount
from billing.ledger import ACCOUNTS, add_entry, lock_accounts
from billing.models import BillingNotice, StripeDispute, StripePayment
from billing.settings import BillingSettings
from billing.sql import Alchemy
from billing.stripe_api import call, create_customer, translate

log = logging.getLogger(__name__)
T = TypeVar("T")
PAYMENTS = StripePayment.__table__  # type: ignore[attr-defined]
NOTICES = BillingNotice.__table__  # type: ignore[attr-defined]
DISPUTES = StripeDispute.__table__  # type: ignore[attr-defined]
FINAL_OK = "succeeded"


class UnknownPayment(UnknownAccount):
    """A PaymentIntent or payment method that is not this tenant's (404)."""


@dataclass(frozen=True)
class Card:
    id: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int
    default: bool

    def json(self) -> dict[str, Any]:
        return {"object": "payment_method", "id": self.id, "type": "card", "brand": self.brand,
                "last4": self.last4, "exp_month": self.exp_month, "exp_year": self.exp_year,
                "default": self.default}  # fmt: skip


def require_stripe(settings: BillingSettings) -> None:
    if settings.stripe_api_key is None:
        raise StripeNotConfigured("Payments are not configured on this gateway (STRIPE_API_KEY is not set).")


async def paying(request: Awaitable[T]) -> T:
    """One Stripe call that may move money: a declined card is the tenant's 402 with Stripe's own message."""
    try:
        return await request
    except stripe.CardError as exc:
        raise PaymentDeclined(exc.user_message or str(exc), code=exc.code or "card_declined") from exc
    except stripe.StripeError as exc:
        raise translate(exc) from exc


async def account(conn: AsyncConnection, tenant_id: str) -> Any:
    row = (await conn.execute(sa.select(ACCOUNTS).where(ACCOUNTS.c.tenant_id == tenant_id))).first()
    if row is None:
        raise UnknownAccount(f"No billing account for tenant {tenant_id!r}.")
    return row


async def customer_of(db: AsyncEngine, client: stripe.StripeClient, tenant_id: str) -> str:
    """The tenant's Stripe customer (the one the invoice sync uses), created on first need."""
    async with db.connect() as conn:
        row = await account(conn, tenant_id)
    if row.stripe_customer_id:
        return str(row.stripe_customer_id)
    created = await create_customer(client, tenant_id)
    async with db.begin() as conn:  # another process may have stored one first: keep that one
        await conn.execute(
            sa.update(ACCOUNTS)
            .where(ACCOUNTS.c.tenant_id == tenant_id, ACCOUNTS.c.stripe_customer_id.is_(None))
            .values(stripe_customer_id=created)
        )
        return str((await account(conn, tenant_id)).stripe_customer_id)


# --- card on file ----------------------------------------------------------------------------------------------


async def setup_intent(client: stripe.StripeClient, customer: str, tenant_id: str) -> dict[str, Any]:
    params: Any = {"customer": customer, "usage": "off_session", "payment_method_types": ["card"],
                   "metadata": {"lgw_tenant_id": tenant_id}}  # fmt: skip
    si = await call(client.v1.setup_intents.create_async(params))
    return {"object": "setup_intent", "id": si.id, "client_secret": si.client_secret, "status": si.status}


async def card_to_save(
    client: stripe.StripeClient, customer: str, setup_intent: str | None, payment_method: str | None
) -> str:
    """The payment method a confirmed SetupIntent (or the browser) gave us, attached to the tenant's customer and
    made its default for invoices; declined cards are a 402 with Stripe's message."""
    if setup_intent:
        si = (await call(client.v1.setup_intents.retrieve_async(setup_intent))).to_dict()
        if si.get("customer") != customer:
            raise UnknownPayment(f"No setup intent {setup_intent!r} on this account.", param="setup_intent")
        if si.get("status") != FINAL_OK or not si.get("payment_method"):
            raise PaymentDeclined(f"The card was not set up (the setup intent is {si.get('status')}).",
                                  code="setup_intent_unconfirmed")  # fmt: skip
        payment_method = str(si["payment_method"])
    if not payment_method:
        raise InvalidBillingInput("Give setup_intent (confirmed by Stripe.js) or payment_method.", param="setup_intent")
    await attach(client, customer, payment_method)
    params: Any = {"invoice_settings": {"default_payment_method": payment_method}}
    await call(client.v1.customers.update_async(customer, params))
    return payment_method


async def attach(client: stripe.StripeClient, customer: str, payment_method: str) -> None:
    """The payment method, attached to our customer unless it is already (a declined card is a 402)."""
    try:
        pm = (await client.v1.payment_methods.retrieve_async(payment_method)).to_dict()
    except stripe.InvalidRequestError as exc:
        if exc.http_status == 404:
            raise UnknownPayment(f"No payment method {payment_method!r}.", param="payment_method") from exc
        raise translate(exc) from exc
    except stripe.StripeError as exc:
        raise translate(exc) from exc
    if pm.get("customer") not in (None, customer):
        raise UnknownPayment(f"No payment method {payment_method!r} on this account.", param="payment_method")
    if pm.get("customer") is None:  # real Stripe attaches on SetupIntent success; localstripe does not
        await paying(client.v1.payment_methods.attach_async(payment_method, {"customer": customer}))


async def cards(client: stripe.StripeClient, customer: str | None, default: str | None) -> list[Card]:
    if not customer:
        return []
    found = await call(client.v1.payment_methods.list_async({"customer": customer, "type": "card", "limit": 100}))
    out = []
    for pm in found.to_dict()["data"]:
        card = pm.get("card") or {}
        brand, last4 = str(card.get("brand", "")), str(card.get("last4", ""))
        expiry = int(card.get("exp_month") or 0), int(card.get("exp_year") or 0)
        out.append(Card(pm["id"], brand, last4, *expiry, pm["id"] == default))
    return out


async def remove_card(client: stripe.StripeClient, customer: str | None, payment_method: str) -> None:
    try:
        pm = (await client.v1.payment_methods.retrieve_async(payment_method)).to_dict()
    except stripe.InvalidRequestError as exc:
        if exc.http_status == 404:
            raise UnknownPayment(f"No payment method {payment_method!r} on this account.", param="id") from exc
        raise translate(exc) from exc
    except stripe.StripeError as exc:
        raise translate(exc) from exc
    if not customer or pm.get("customer") != customer:
        raise UnknownPayment(f"No payment method {payment_method!r} on this account.", param="id")
    await call(client.v1.payment_methods.detach_async(payment_method))


# --- payments --------------------------------------------------------------------------------------------------


def check_amount(amount: int, settings: BillingSettings, param: str = "amount") -> None:
    low, high = settings.topup_min_minor, settings.topup_max_minor
    if isinstance(amount, bool) or not isinstance(amount, int) or not (low <= amount <= high):
        raise InvalidBillingInput(f"{param} must be an integer between {low} and {high} (minor units).", param=param)


async def create_payment(
    client: stripe.StripeClient,
    *,
    tenant_id: str,
    customer: str,
    amount: int,
    currency: str,
    purpose: str,
    payment_method: str | None = None,
    off_session: bool = False,
    key: str | None = None,
) -> dict[str, Any]:
    """A PaymentIntent for our customer; with a payment method it is confirmed at once (a decline is a 402)."""
    meta = {"lgw_tenant_id": tenant_id, "lgw_purpose": purpose, **({"lgw_key": key} if key else {})}
    params: dict[str, Any] = {"amount": amount, "currency": currency, "customer": customer,
                              "payment_method_types": ["card"], "metadata": meta}  # fmt: skip
    if payment_method:
        params.update(payment_method=payment_method, confirm=True)
        if off_session:
            params["off_session"] = True
    opts: Any = {"idempotency_key": key or f"lgw-pi-{tenant_id}-{secrets.token_hex(8)}"}
    pi = await paying(client.v1.payment_intents.create_async(params, opts))  # type: ignore[arg-type]
    return dict(pi.to_dict())


async def read_payment(client: stripe.StripeClient, payment_intent: str) -> dict[str, Any]:
    try:
        return dict((await client.v1.payment_intents.retrieve_async(payment_intent)).to_dict())
    except stripe.InvalidRequestError as exc:
        if exc.http_status == 404:
            raise UnknownPayment(f"No top-up {payment_intent!r}.", param="id") from exc
        raise translate(exc) from exc
    except stripe.StripeError as exc:
        raise translate(exc) from exc


def payment_error(pi: dict[str, Any]) -> str | None:
    err = pi.get("last_payment_error") or {}
    return str(err.get("message")) if err.get("message") else None


async def settle(conn: AsyncConnection, pi: dict[str, Any]) -> str | None:
    """Record a PaymentIntent as Stripe has it now and, once it has succeeded, credit it (once, ever).

    Returns what happened ("credited", "already_credited", "recorded", "currency_mismatch"), or None when the
    PaymentIntent is not ours (no tenant in its metadata and no row of ours).
    """
    pi_id = str(pi["id"])
    meta = pi.get("metadata") or {}
    now = datetime.now(UTC)
    tenant = meta.get("lgw_tenant_id")
    if tenant:
        new = {"id": pi_id, "tenant_id": str(tenant), "purpose": str(meta.get("lgw_purpose") or "topup"),
               "amount_minor": int(pi.get("amount") or 0), "currency": str(pi.get("currency") or ""),
               "status": str(pi.get("status")), "created_at": now, "updated_at": now}  # fmt: skip
        stmt = insert(PAYMENTS).values(new).on_conflict_do_nothing(index_elements=["id"])
        await conn.execute(stmt)
    row = (await conn.execute(sa.select(PAYMENTS).where(PAYMENTS.c.id == pi_id).with_for_update())).first()
    if row is None:
        return None
    status = row.status if row.status == FINAL_OK else str(pi.get("status"))  # never back from succeeded
    received = int(pi.get("amount_received") or (pi.get("amount") if status == FINAL_OK else 0) or 0)
    values: dict[str, Any] = {"status": status, "updated_at": now, "amount_received": received}
    if payment_error(pi) and status != FINAL_OK:
        values["error"] = payment_error(pi)
    outcome = "recorded"
    if status == FINAL_OK and not row.credited:
        acc = (await conn.execute(sa.select(ACCOUNTS.c.currency).where(ACCOUNTS.c.tenant_id == row.tenant_id))).one()
        currency = str(pi.get("currency") or row.currency)
        if currency != acc.currency:
            values["error"] = f"Paid in {currency}, the account bills in {acc.currency}: not credited."
            log.error("PaymentIntent %s of %s: %s", pi_id, row.tenant_id, values["error"])
            outcome = "currency_mismatch"
        elif received > 0:
            await add_entry(conn, row.tenant_id, "credit", received, f"Stripe {row.purpose} {pi_id}",
                            idempotency_key=pi_id)  # fmt: skip
            values.update(credited=True, error=None)
            outcome = "credited"
    elif row.credited:
        outcome = "already_credited"
    await conn.execute(sa.update(PAYMENTS).where(PAYMENTS.c.id == pi_id).values(values))
    if status == FINAL_OK and meta.get("lgw_key"):
        await auto_recharge.release(conn, row.tenant_id, str(meta["lgw_key"]))
    return outcome


async def refund(conn: AsyncConnection, charge: dict[str, Any]) -> str | None:
    """`charge.refunded`: take what was refunded since the last time off the credit (the balance may go
    negative). Keyed by the charge's cumulative `amount_refunded`, so events in any order take it once."""
    pi_id = charge.get("payment_intent")
    if not pi_id:
        return None
    row = (await conn.execute(sa.select(PAYMENTS).where(PAYMENTS.c.id == pi_id).with_for_update())).first()
    if row is None or not row.credited:
        return None
    total = int(charge.get("amount_refunded") or 0)
    if total <= row.refunded_minor:
        return "refund_already_taken"
    await add_entry(conn, row.tenant_id, "refund", total - row.refunded_minor, f"Stripe refund of {pi_id}",
                    idempotency_key=f"{pi_id}-refunded-{total}")  # fmt: skip
    await conn.execute(sa.update(PAYMENTS).where(PAYMENTS.c.id == pi_id).values(refunded_minor=total))
    await notify(conn, row.tenant_id, "refund", f"A refund of {total - row.refunded_minor} ({row.currency}) was "
                 f"taken off your credit.", str(charge.get("id") or pi_id))  # fmt: skip
    return "refunded"


async def dispute(conn: AsyncConnection, obj: dict[str, Any]) -> str:
    """`charge.dispute.created`: recorded for the operator (GET /admin/billing/disputes)."""
    pi_id = obj.get("payment_intent")
    tenant = None
    if pi_id:
        tenant = (await conn.execute(sa.select(PAYMENTS.c.tenant_id).where(PAYMENTS.c.id == pi_id))).scalar()
    row = {"id": str(obj["id"]), "tenant_id": tenant, "charge_id": obj.get("charge"), "payment_intent_id": pi_id,
           "amount_minor": int(obj.get("amount") or 0), "currency": obj.get("currency"), "reason": obj.get("reason"),
           "status": obj.get("status"), "created_at": datetime.now(UTC)}  # fmt: skip
    await conn.execute(insert(DISPUTES).values(row).on_conflict_do_nothing(index_elements=["id"]))
    log.warning("Stripe dispute %s opened on %s (tenant %s)", obj["id"], obj.get("charge"), tenant)
    return "dispute_recorded"


async def notify(conn: AsyncConnection, tenant_id: str, kind: str, message: str, ref: str | None = None) -> None:
    """A notice in the tenant's console (GET /v1/billing/notices)."""
    values = {"tenant_id": tenant_id, "kind": kind, "message": message[:1000], "ref": ref,
              "created_at": datetime.now(UTC)}  # fmt: skip
    await conn.execute(sa.insert(NOTICES).values(values))


async def lock(conn: AsyncConnection, tenant_id: str) -> None:
    if tenant_id not in await lock_accounts(Alchemy(conn), [tenant_id], None):
        raise UnknownAccount(f"No billing account for tenant {tenant_id!r}.")
