"""Billing settings (pydantic-settings; billing reads its own, never the gateway's)."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class BillingSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    trial_tokens: int = Field(
        default=1_000_000,
        validation_alias=AliasChoices("BILLING_TRIAL_TOKENS"),
        description="Free tokens granted to every new tenant, used before any credit.",
    )
    trial_covers_training: bool = Field(
        default=False,
        validation_alias=AliasChoices("BILLING_TRIAL_COVERS_TRAINING"),
        description="Let free trial tokens pay for fine-tuning (trained tokens) too, not only for inference.",
    )
    default_mode: str = Field(default="prepaid", validation_alias=AliasChoices("BILLING_DEFAULT_MODE"))
    currency: str = Field(default="usd", validation_alias=AliasChoices("BILLING_CURRENCY"))
    period: Literal["month", "day"] = Field(
        default="month",
        validation_alias=AliasChoices("BILLING_PERIOD"),
        description="Length of billing periods: month (ids like 2026-11) or day (2026-11-25).",
    )
    stripe_api_key: SecretStr | None = Field(default=None, validation_alias=AliasChoices("STRIPE_API_KEY"))
    stripe_api_base: str | None = Field(
        default=None,
        validation_alias=AliasChoices("STRIPE_API_BASE"),
        description="Override Stripe's API address (tests point it at localstripe on loopback).",
    )
    stripe_webhook_secret: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("STRIPE_WEBHOOK_SECRET")
    )
    stripe_timeout_seconds: float = Field(default=30.0, validation_alias=AliasChoices("STRIPE_TIMEOUT_SECONDS"))
    stripe_network_retries: int = Field(
        default=2,
        validation_alias=AliasChoices("STRIPE_NETWORK_RETRIES"),
        description="Retries inside one call (same idempotency key); the outbox retries later beyond that.",
    )
    stripe_sync_interval_seconds: float = Field(
        default=30.0,
        validation_alias=AliasChoices("STRIPE_SYNC_INTERVAL_SECONDS"),
        description="How often the gateway's worker drains the Stripe outbox (when STRIPE_API_KEY is set).",
    )
    stripe_backoff_base_seconds: float = Field(
        default=30.0, validation_alias=AliasChoices("STRIPE_BACKOFF_BASE_SECONDS")
    )
    stripe_backoff_cap_seconds: float = Field(
        default=3600.0, validation_alias=AliasChoices("STRIPE_BACKOFF_CAP_SECONDS")
    )
    stripe_auto_advance: bool = Field(
        default=True,
        validation_alias=AliasChoices("STRIPE_AUTO_ADVANCE"),
        description="Let Stripe finalise and collect our invoices (about an hour after creation); off: drafts "
        "wait for review. localstripe does not know the parameter, so its tests turn it off.",
    )
    stripe_publishable_key: str | None = Field(
        default=None,
        validation_alias=AliasChoices("STRIPE_PUBLISHABLE_KEY"),
        description="The pk_… key a Billing page hands to Stripe.js (GET /v1/billing/config).",
    )
    stripe_js_url: str = Field(
        default="https://js.stripe.com/v3/",
        validation_alias=AliasChoices("STRIPE_JS_URL"),
        description="Where a Billing page loads Stripe.js from (tests: the copy localstripe serves).",
    )
    topup_min_minor: int = Field(
        default=500, ge=1, validation_alias=AliasChoices("BILLING_TOPUP_MIN"), description="Smallest top-up."
    )
    topup_max_minor: int = Field(
        default=1_000_000, ge=1, validation_alias=AliasChoices("BILLING_TOPUP_MAX"), description="Largest top-up."
    )
    days_until_due: int = Field(
        default=14,
        ge=0,
        validation_alias=AliasChoices("BILLING_DAYS_UNTIL_DUE"),
        description="Days a postpaid invoice sent to a tenant without a card has before it is due.",
    )
    grace_days: float = Field(
        default=14,
        ge=0,
        validation_alias=AliasChoices("BILLING_GRACE_DAYS"),
        description="Days an invoice may stay unpaid after its due date before the tenant is suspended.",
    )
    dunning_schedule: str = Field(
        default="*/10 * * * *",
        validation_alias=AliasChoices("BILLING_DUNNING_SCHEDULE"),
        description="Cron expression of the periodic overdue-invoice check (a pgqueuer schedule).",
    )
