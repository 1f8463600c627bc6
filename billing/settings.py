"""Billing settings (pydantic-settings; billing reads its own, never the gateway's)."""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class BillingSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    trial_tokens: int = Field(
        default=1_000_000,
        validation_alias=AliasChoices("BILLING_TRIAL_TOKENS"),
        description="Free tokens granted to every new tenant, used before any credit.",
    )
    default_mode: str = Field(default="prepaid", validation_alias=AliasChoices("BILLING_DEFAULT_MODE"))
    currency: str = Field(default="usd", validation_alias=AliasChoices("BILLING_CURRENCY"))
    price_cache_seconds: float = Field(default=5.0, validation_alias=AliasChoices("BILLING_PRICE_CACHE_SECONDS"))
    stripe_api_key: SecretStr | None = Field(default=None, validation_alias=AliasChoices("STRIPE_API_KEY"))
    stripe_api_base: str | None = Field(
        default=None,
        validation_alias=AliasChoices("STRIPE_API_BASE"),
        description="Override Stripe's API address (tests point it at localstripe on loopback).",
    )
    stripe_webhook_secret: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("STRIPE_WEBHOOK_SECRET")
    )
