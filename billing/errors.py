"""Billing's own errors; the gateway maps them to HTTP in its one error table.

BillingError
├── InsufficientQuota     trial and prepaid credit used up (HTTP 429 insufficient_quota)
├── UnknownAccount        no billing account for that tenant (404)
├── InvalidBillingInput   a bad price, amount or period (400)
├── StripeUnavailable     Stripe could not be reached (or answered 429/5xx); the outbox retries later
├── StripeRejected        Stripe refused a call (4xx) or is not configured; retried later, logged as an error
│   └── StripeNotConfigured   no STRIPE_API_KEY: payments are off (HTTP 404 stripe_not_configured)
└── PaymentDeclined       the card was declined or needs authentication; Stripe's message (HTTP 402)
"""

from __future__ import annotations


class BillingError(Exception):
    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InsufficientQuota(BillingError):
    pass


class UnknownAccount(BillingError):
    pass


class InvalidBillingInput(BillingError):
    pass


class StripeUnavailable(BillingError):
    pass


class StripeRejected(BillingError):
    pass


class StripeNotConfigured(StripeRejected):
    pass


class PaymentDeclined(BillingError):
    def __init__(self, message: str, *, code: str = "card_declined", param: str | None = None) -> None:
        super().__init__(message, param=param)
        self.code = code
