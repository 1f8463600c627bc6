"""Request bodies of the payments API (answers are built by the service)."""

from __future__ import annotations

import msgspec


class CardSave(msgspec.Struct, forbid_unknown_fields=True):
    setup_intent: str | None = None  # seti_… confirmed by Stripe.js
    payment_method: str | None = None  # or a pm_… made by Stripe.js


class TopupCreate(msgspec.Struct, forbid_unknown_fields=True):
    amount: int  # minor units of the billing currency
    payment_method: str | None = None  # "default" (the card on file), a pm_…, or none: Stripe.js confirms


class AutoRecharge(msgspec.Struct, forbid_unknown_fields=True):
    enabled: bool
    threshold: int = 0  # minor units
    amount: int = 0  # minor units
