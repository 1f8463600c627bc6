"""Billing request bodies and the shaping of billing's numbers for JSON."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec

from billing.ledger import Balance
from billing.money import MICROS_PER_MINOR


class PriceCreate(msgspec.Struct, forbid_unknown_fields=True):
    model: str
    prompt_per_million: int
    completion_per_million: int
    currency: str | None = None  # the billing currency when omitted
    training_per_million: int = 0  # fine-tuning, per trained token
    effective_from: datetime | None = None


class CreditCreate(msgspec.Struct, forbid_unknown_fields=True):
    amount: int
    note: str = ""
    idempotency_key: str | None = None


class ClosePeriod(msgspec.Struct, forbid_unknown_fields=True):
    period: str


def minor(micros: int) -> str:
    """Exact amount in minor units as a decimal string (charges are fractions of a cent)."""
    return str(Decimal(micros) / MICROS_PER_MINOR)


def balance_json(b: Balance) -> dict[str, Any]:
    return {
        "object": "balance",
        "tenant_id": b.tenant_id,
        "billing_mode": b.mode,
        "currency": b.currency,
        "trial_tokens_remaining": max(b.trial_remaining, 0),
        "credit_balance": b.credit_minor,
        "credit_balance_exact": minor(b.credit_micros),
    }


def usage_json(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {
                **{k: v for k, v in r.items() if k != "cost_micros"},
                "cost": minor(r["cost_micros"]),
                "cost_micros": r["cost_micros"],
            }
            for r in rows
        ],
    }


def invoice_json(inv: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in inv.items() if k != "lines"}
    out["object"] = "invoice"
    out["created_at"] = int(inv["created_at"].timestamp())
    out["total"] = inv["total_minor"]
    out["lines"] = [{**line, "amount": line["amount_minor"]} for line in inv.get("lines", [])]
    return out
