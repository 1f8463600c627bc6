"""Billing tables: accounts, the price book, the append-only ledger, invoices, the Stripe outbox.

Tenants are referenced by id (the `tenants` table belongs to the gateway; billing never imports it).
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel


def _now() -> datetime:
    return datetime.now(UTC)


def _tz(nullable: bool = False, default_now: bool = False, index: bool = False) -> datetime:
    kwargs = {"default_factory": _now} if default_now else {"default": None}
    return Field(sa_type=sa.DateTime(timezone=True), nullable=nullable, index=index, **kwargs)  # type: ignore[no-any-return]


class BillingAccount(SQLModel, table=True):
    """One per tenant. Its row is also the lock that serialises that tenant's ledger writes."""

    __tablename__ = "billing_accounts"

    tenant_id: str = Field(primary_key=True, foreign_key="tenants.id", max_length=40)
    mode: str = Field(default="prepaid", max_length=10)
    currency: str = Field(default="usd", max_length=3)
    stripe_customer_id: str | None = Field(default=None, max_length=100)
    stripe_subscription_id: str | None = Field(
        default=None, max_length=100, description="the $0 subscription Stripe invoices our usage under"
    )
    created_at: datetime = _tz(default_now=True)
    stripe_payment_method_id: str | None = Field(default=None, max_length=100, description="the card on file")
    auto_recharge_enabled: bool = Field(default=False)
    auto_recharge_threshold: int = Field(default=0, sa_type=sa.BigInteger, description="minor units")
    auto_recharge_amount: int = Field(default=0, sa_type=sa.BigInteger, description="minor units")
    auto_recharge_count: int = Field(default=0, description="crossings so far: the next crossing's key")
    auto_recharge_pending: str | None = Field(
        default=None, max_length=120, description="the crossing whose recharge is in flight (its key)"
    )
    auto_recharge_error: str | None = Field(default=None, max_length=1000, description="why it was turned off")
    auto_recharge_error_at: datetime | None = _tz(nullable=True)


class Price(SQLModel, table=True):
    """A price version: never edited; a new row with a later effective_from replaces it from then on."""

    __tablename__ = "prices"
    __table_args__ = (sa.UniqueConstraint("model", "effective_from", name="uq_prices_model_from"),)

    id: int | None = Field(default=None, primary_key=True)
    model: str = Field(max_length=200, index=True, description="base model name or deployment id")
    prompt_per_million: int = Field(sa_type=sa.BigInteger, description="minor units per 1M prompt tokens")
    completion_per_million: int = Field(sa_type=sa.BigInteger, description="minor units per 1M completion tokens")
    training_per_million: int = Field(
        default=0, sa_type=sa.BigInteger, description="minor units per 1M trained tokens (fine-tuning)"
    )
    currency: str = Field(default="usd", max_length=3)
    effective_from: datetime = _tz()
    created_at: datetime = _tz(default_now=True)


class LedgerEntry(SQLModel, table=True):
    """Immutable. Money in micro-minor units (signed: credit +, charge −), trial in tokens (grant +, use −).

    Each entry carries the tenant's running balances after it, so the current balance is one index lookup;
    `balance_after` always equals the sum of the tenant's entries up to it (the reconciliation checks this).
    """

    __tablename__ = "ledger_entries"
    __table_args__ = (
        sa.Index("ix_ledger_tenant_id", "tenant_id", "id"),
        sa.Index("ix_ledger_tenant_period", "tenant_id", "period"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=sa.BigInteger)
    tenant_id: str = Field(foreign_key="tenants.id", max_length=40)
    kind: str = Field(max_length=20, description="trial_grant | credit | refund | charge | payment")
    occurred_at: datetime = _tz()
    period: str | None = Field(default=None, max_length=10, description="the invoice period a charge belongs to")
    request_id: str | None = Field(default=None, max_length=40, unique=True)
    model: str | None = Field(default=None, max_length=200, description="deployment id or base model")
    prompt_tokens: int = Field(default=0, sa_type=sa.BigInteger)
    completion_tokens: int = Field(default=0, sa_type=sa.BigInteger)
    prompt_price: int = Field(default=0, sa_type=sa.BigInteger)
    completion_price: int = Field(default=0, sa_type=sa.BigInteger)
    amount_micros: int = Field(default=0, sa_type=sa.BigInteger)
    trial_delta: int = Field(default=0, sa_type=sa.BigInteger)
    balance_after_micros: int = Field(default=0, sa_type=sa.BigInteger)
    trial_after: int = Field(default=0, sa_type=sa.BigInteger)
    note: str | None = Field(default=None, max_length=500)
    idempotency_key: str | None = Field(default=None, max_length=200, unique=True)
    created_at: datetime = _tz(default_now=True)


class Invoice(SQLModel, table=True):
    __tablename__ = "invoices"
    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "period", name="uq_invoices_tenant_period"),
        sa.Index("ix_invoices_overdue", "due_at", postgresql_where=sa.text("status = 'open'")),  # dunning's scan
    )

    id: str = Field(primary_key=True, max_length=40)
    tenant_id: str = Field(foreign_key="tenants.id", max_length=40, index=True)
    period: str = Field(max_length=10, description="YYYY-MM or YYYY-MM-DD")
    currency: str = Field(default="usd", max_length=3)
    prompt_tokens: int = Field(default=0, sa_type=sa.BigInteger)
    completion_tokens: int = Field(default=0, sa_type=sa.BigInteger)
    total_micros: int = Field(default=0, sa_type=sa.BigInteger)
    total_minor: int = Field(default=0, sa_type=sa.BigInteger)
    status: str = Field(default="open", max_length=10, description="open | paid")
    stripe_invoice_id: str | None = Field(default=None, max_length=100)
    created_at: datetime = _tz(default_now=True)
    collection_method: str | None = Field(default=None, max_length=30, description="how Stripe collects it")
    due_at: datetime | None = _tz(nullable=True)
    dunning: str | None = Field(default=None, max_length=20, description="suspended | waived | resolved")
    payment_error: str | None = Field(default=None, max_length=1000, description="Stripe's last failure")


class InvoiceLine(SQLModel, table=True):
    __tablename__ = "invoice_lines"

    id: int | None = Field(default=None, primary_key=True)
    invoice_id: str = Field(foreign_key="invoices.id", max_length=40, index=True)
    model: str = Field(max_length=200)
    prompt_price: int = Field(sa_type=sa.BigInteger)
    completion_price: int = Field(sa_type=sa.BigInteger)
    requests: int = Field(default=0, sa_type=sa.BigInteger)
    prompt_tokens: int = Field(default=0, sa_type=sa.BigInteger)
    completion_tokens: int = Field(default=0, sa_type=sa.BigInteger)
    trial_tokens: int = Field(default=0, sa_type=sa.BigInteger)
    amount_micros: int = Field(default=0, sa_type=sa.BigInteger)
    amount_minor: int = Field(default=0, sa_type=sa.BigInteger)


class StripeOutbox(SQLModel, table=True):
    """Work for the Stripe worker: one row per closed invoice, drained with retries and idempotency keys."""

    __tablename__ = "stripe_outbox"
    __table_args__ = (
        sa.Index("ix_stripe_outbox_due", "next_attempt_at", postgresql_where=sa.text("status = 'pending'")),
    )

    id: int | None = Field(default=None, primary_key=True)
    invoice_id: str = Field(foreign_key="invoices.id", max_length=40, unique=True)
    status: str = Field(default="pending", max_length=10, description="pending | done")
    attempts: int = Field(default=0, description="tries so far, failed or not")
    next_attempt_at: datetime = _tz(default_now=True)
    last_error: str | None = Field(default=None, max_length=1000)
    created_at: datetime = _tz(default_now=True)
    done_at: datetime | None = _tz(nullable=True)


class StripePayment(SQLModel, table=True):
    """One PaymentIntent of ours (a top-up or an auto-recharge); its id is its credit entry's idempotency key."""

    __tablename__ = "stripe_payments"

    id: str = Field(primary_key=True, max_length=100, description="pi_…")
    tenant_id: str = Field(foreign_key="tenants.id", max_length=40, index=True)
    purpose: str = Field(max_length=20, description="topup | auto_recharge")
    amount_minor: int = Field(sa_type=sa.BigInteger)
    currency: str = Field(max_length=3)
    status: str = Field(max_length=40, description="Stripe's PaymentIntent status")
    amount_received: int = Field(default=0, sa_type=sa.BigInteger)
    credited: bool = Field(default=False)
    refunded_minor: int = Field(default=0, sa_type=sa.BigInteger)
    error: str | None = Field(default=None, max_length=1000)
    created_at: datetime = _tz(default_now=True)
    updated_at: datetime = _tz(default_now=True)


class StripeEvent(SQLModel, table=True):
    """Every Stripe event applied, by id: a redelivery changes nothing."""

    __tablename__ = "stripe_events"

    id: str = Field(primary_key=True, max_length=100)
    type: str = Field(max_length=100)
    handled: str | None = Field(default=None, max_length=40)
    received_at: datetime = _tz(default_now=True)


class BillingNotice(SQLModel, table=True):
    """What the tenant is told in its console: a failed payment, auto-recharge turned off, a suspension."""

    __tablename__ = "billing_notices"
    __table_args__ = (sa.Index("ix_billing_notices_tenant", "tenant_id", "id"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=sa.BigInteger)
    tenant_id: str = Field(foreign_key="tenants.id", max_length=40)
    kind: str = Field(max_length=40)
    message: str = Field(max_length=1000)
    ref: str | None = Field(default=None, max_length=100, description="the Stripe or invoice id it is about")
    created_at: datetime = _tz(default_now=True)


class StripeDispute(SQLModel, table=True):
    """A chargeback opened by the card holder's bank, shown to the operator."""

    __tablename__ = "stripe_disputes"

    id: str = Field(primary_key=True, max_length=100, description="dp_…")
    tenant_id: str | None = Field(default=None, max_length=40, index=True)
    charge_id: str | None = Field(default=None, max_length=100)
    payment_intent_id: str | None = Field(default=None, max_length=100)
    amount_minor: int = Field(default=0, sa_type=sa.BigInteger)
    currency: str | None = Field(default=None, max_length=3)
    reason: str | None = Field(default=None, max_length=100)
    status: str | None = Field(default=None, max_length=40)
    created_at: datetime = _tz(default_now=True)
