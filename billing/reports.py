"""Usage with cost, straight from the ledger (one charge per request carries its tokens and its price)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from billing.ledger import LEDGER


async def usage_by_day_and_model(
    conn: AsyncConnection, tenant_id: str, start: datetime | None, end: datetime | None
) -> list[dict[str, Any]]:
    """Rows of {date, model, requests, prompt_tokens, completion_tokens, cost (micro-minor units)}."""
    c = LEDGER.c
    day = sa.func.date(sa.func.timezone("UTC", c.occurred_at)).label("date")
    stmt = (
        sa.select(
            day, c.model, sa.func.count().label("requests"),
            sa.func.sum(c.prompt_tokens).label("prompt_tokens"),
            sa.func.sum(c.completion_tokens).label("completion_tokens"),
            sa.func.sum(-c.amount_micros).label("cost_micros"),
        )
        .where(c.tenant_id == tenant_id, c.kind == "charge")
        .group_by(day, c.model)
        .order_by(day, c.model)
    )  # fmt: skip
    if start is not None:
        stmt = stmt.where(c.occurred_at >= start)
    if end is not None:
        stmt = stmt.where(c.occurred_at < end)
    return [
        {
            "date": r.date.isoformat(), "model": r.model, "requests": int(r.requests),
            "prompt_tokens": int(r.prompt_tokens), "completion_tokens": int(r.completion_tokens),
            "cost_micros": int(r.cost_micros),
        }
        for r in await conn.execute(stmt)
    ]  # fmt: skip
