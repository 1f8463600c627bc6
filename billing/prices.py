"""The price book: versioned prices per base model or deployment. A change never re-rates the past."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from billing.errors import InvalidBillingInput
from billing.models import Price
from billing.sql import duplicate_as

PRICES = Price.__table__  # type: ignore[attr-defined]


async def set_price(
    conn: AsyncConnection,
    model: str,
    prompt_per_million: int,
    completion_per_million: int,
    currency: str,
    effective_from: datetime | None = None,
    *,
    billing_currency: str | None = None,
    training_per_million: int = 0,
) -> dict[str, Any]:
    """A new price version for `model`, in force from `effective_from` (default: now). Accounts are kept in
    `billing_currency`: a price in another would be charged as if it were in that one, so it is refused."""
    if billing_currency is not None and currency.lower() != billing_currency.lower():
        raise InvalidBillingInput(
            f"Prices are in the billing currency ({billing_currency.lower()}, BILLING_CURRENCY), not {currency!r}.",
            param="currency",
        )
    for name, value in (
        ("prompt_per_million", prompt_per_million),
        ("completion_per_million", completion_per_million),
        ("training_per_million", training_per_million),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InvalidBillingInput(f"{name} must be a non-negative integer (minor units per 1M tokens).", param=name)
    if not model:
        raise InvalidBillingInput("model is required.", param="model")
    now = datetime.now(UTC)
    start = effective_from or now
    if start.tzinfo is None:
        raise InvalidBillingInput(
            "effective_from needs a timezone (e.g. 2026-12-01T00:00:00Z).", param="effective_from"
        )
    taken = InvalidBillingInput(f"{model} already has a price starting at {start.isoformat()}.", param="effective_from")
    async with duplicate_as(conn, taken):
        row = (
            await conn.execute(
                sa.insert(PRICES)
                .values(
                    model=model, prompt_per_million=prompt_per_million, completion_per_million=completion_per_million,
                    training_per_million=training_per_million,
                    currency=currency.lower(), effective_from=start, created_at=now,
                )
                .returning(*PRICES.c)
            )
        ).one()  # fmt: skip
    return dict(row._mapping)


async def list_prices(conn: AsyncConnection) -> list[dict[str, Any]]:
    rows = await conn.execute(sa.select(PRICES).order_by(PRICES.c.model, PRICES.c.effective_from))
    return [dict(r._mapping) for r in rows]
