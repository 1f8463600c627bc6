"""What the console's pages show, from the same queries as the tenant API (/v1/balance, /v1/usage,
/v1/invoices), so the numbers are the same. Knows nothing of HTTP."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from billing import invoices, ledger, reports
from billing.errors import UnknownAccount
from billing.ledger import LEDGER
from gateway.accounts.schemas import balance_json, invoice_json, usage_json
from gateway.db import guarded
from gateway.timeutil import utcnow

CSV_COLUMNS = ("date", "model", "requests", "prompt_tokens", "completion_tokens", "cost")


def month_start(now: datetime | None = None) -> datetime:
    now = now or utcnow()
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


async def balance(db: AsyncEngine, tenant_id: str) -> dict[str, Any] | None:
    """As GET /v1/balance; None before the tenant has a billing account."""
    async with guarded(), db.connect() as conn:
        try:
            b = await ledger.balance(conn, tenant_id)
        except UnknownAccount:
            return None
    return {**balance_json(b), "credit_micros": b.credit_micros}


async def usage(db: AsyncEngine, tenant_id: str, start: datetime | None = None) -> list[dict[str, Any]]:
    """As GET /v1/usage: by day and model, with cost."""
    async with guarded(), db.connect() as conn:
        rows = await reports.usage_by_day_and_model(conn, tenant_id, start, None)
    return list(usage_json(rows)["data"])


async def invoice_list(db: AsyncEngine, tenant_id: str) -> list[dict[str, Any]]:
    """As GET /v1/invoices, lines included."""
    async with guarded(), db.connect() as conn:
        return [invoice_json(i) for i in await invoices.list_invoices(conn, tenant_id)]


def totals(rows: list[dict[str, Any]]) -> dict[str, int]:
    keys = ("requests", "prompt_tokens", "completion_tokens", "cost_micros")
    return {k: sum(int(r[k]) for r in rows) for k in keys}


def chart(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Tokens per day, one series per model (for the vendored Chart.js)."""
    days = sorted({r["date"] for r in rows})
    models = sorted({r["model"] or "(none)" for r in rows})
    series = {m: [0] * len(days) for m in models}
    for r in rows:
        series[r["model"] or "(none)"][days.index(r["date"])] += r["prompt_tokens"] + r["completion_tokens"]
    return {"labels": days, "series": [{"label": m, "data": v} for m, v in series.items()]}


def usage_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        writer.writerow([r[c] for c in CSV_COLUMNS])
    return out.getvalue()


async def charge(db: AsyncEngine, tenant_id: str, request_id: str) -> dict[str, Any]:
    """The ledger's charge of one of the tenant's requests: tokens, trial tokens used, cost; `found` false until
    it is committed (another tenant's request is never found)."""
    c = LEDGER.c
    stmt = sa.select(c.prompt_tokens, c.completion_tokens, c.trial_delta, c.amount_micros).where(
        c.tenant_id == tenant_id, c.request_id == request_id, c.kind == "charge"
    )
    async with guarded(), db.connect() as conn:
        row = (await conn.execute(stmt)).first()
    if row is None:
        return {"found": False}
    return {"found": True, "prompt_tokens": row.prompt_tokens, "completion_tokens": row.completion_tokens,
            "trial_tokens_used": -row.trial_delta, "cost_micros": -row.amount_micros}  # fmt: skip
