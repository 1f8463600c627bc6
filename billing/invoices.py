"""Closing a billing period: one invoice per tenant, a line per model and price, totals exact to the micro."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from billing.ledger import INVOICES, LEDGER, lock_accounts, period_unit
from billing.models import InvoiceLine, StripeOutbox
from billing.money import round_half_up, split_rounded
from billing.sql import Alchemy

LINES = InvoiceLine.__table__  # type: ignore[attr-defined]
OUTBOX = StripeOutbox.__table__  # type: ignore[attr-defined]


def check_period(period: str) -> str:
    period_unit(period)  # raises InvalidBillingInput for anything but YYYY-MM or YYYY-MM-DD
    return period


async def close_period(conn: AsyncConnection, period: str) -> list[dict[str, Any]]:
    """Invoices for every tenant with charges in `period`. Closing again returns the same invoices.

    Runs in the caller's transaction; each tenant's account row is locked, so no charge for that tenant
    is written while its invoice is summed.
    """
    check_period(period)
    tenants = [
        r.tenant_id
        for r in await conn.execute(
            sa.select(LEDGER.c.tenant_id).where(LEDGER.c.kind == "charge", LEDGER.c.period == period).distinct()
        )
    ]
    for tenant_id in sorted(tenants):
        await lock_accounts(Alchemy(conn), [tenant_id], None)
        if (await _invoice_row(conn, tenant_id, period)) is None:
            await _create_invoice(conn, tenant_id, period)
    return await list_invoices(conn, period=period)


async def _invoice_row(conn: AsyncConnection, tenant_id: str, period: str) -> Any:
    stmt = sa.select(INVOICES).where(INVOICES.c.tenant_id == tenant_id, INVOICES.c.period == period)
    return (await conn.execute(stmt)).first()


async def _create_invoice(conn: AsyncConnection, tenant_id: str, period: str) -> None:
    c = LEDGER.c
    groups = (
        await conn.execute(
            sa.select(
                c.model, c.prompt_price, c.completion_price, sa.func.count().label("requests"),
                sa.func.sum(c.prompt_tokens).label("prompt_tokens"),
                sa.func.sum(c.completion_tokens).label("completion_tokens"),
                sa.func.sum(-c.trial_delta).label("trial_tokens"), sa.func.sum(-c.amount_micros).label("amount_micros"),
            )
            .where(c.tenant_id == tenant_id, c.kind == "charge", c.period == period)
            .group_by(c.model, c.prompt_price, c.completion_price)
            .order_by(c.model, c.prompt_price, c.completion_price)
        )
    ).all()  # fmt: skip
    amounts = [int(g.amount_micros) for g in groups]
    minors = split_rounded(amounts)
    invoice_id = "inv_" + secrets.token_hex(8)
    currency = (
        await conn.execute(sa.text("SELECT currency FROM billing_accounts WHERE tenant_id = :t"), {"t": tenant_id})
    ).scalar_one()
    await conn.execute(
        sa.insert(INVOICES).values(
            id=invoice_id, tenant_id=tenant_id, period=period, currency=currency,
            prompt_tokens=sum(int(g.prompt_tokens) for g in groups),
            completion_tokens=sum(int(g.completion_tokens) for g in groups),
            total_micros=sum(amounts), total_minor=round_half_up(sum(amounts)), status="open",
            created_at=datetime.now(UTC),
        )
    )  # fmt: skip
    await conn.execute(
        sa.insert(LINES),
        [
            {
                "invoice_id": invoice_id, "model": g.model, "prompt_price": g.prompt_price,
                "completion_price": g.completion_price, "requests": int(g.requests),
                "prompt_tokens": int(g.prompt_tokens), "completion_tokens": int(g.completion_tokens),
                "trial_tokens": int(g.trial_tokens), "amount_micros": int(g.amount_micros), "amount_minor": minor,
            }
            for g, minor in zip(groups, minors, strict=True)
        ],
    )  # fmt: skip
    now = datetime.now(UTC)
    outbox = {"invoice_id": invoice_id, "status": "pending", "attempts": 0, "next_attempt_at": now, "created_at": now}
    await conn.execute(sa.insert(OUTBOX).values(**outbox))


async def list_invoices(
    conn: AsyncConnection, tenant_id: str | None = None, period: str | None = None
) -> list[dict[str, Any]]:
    stmt = sa.select(INVOICES).order_by(INVOICES.c.period.desc(), INVOICES.c.tenant_id)
    if tenant_id is not None:
        stmt = stmt.where(INVOICES.c.tenant_id == tenant_id)
    if period is not None:
        stmt = stmt.where(INVOICES.c.period == period)
    invoices = [dict(r._mapping) for r in await conn.execute(stmt)]
    if invoices:
        lines = await conn.execute(
            sa.select(LINES).where(LINES.c.invoice_id.in_([i["id"] for i in invoices])).order_by(LINES.c.id)
        )
        by_invoice: dict[str, list[dict[str, Any]]] = {i["id"]: [] for i in invoices}
        for line in lines:
            by_invoice[line.invoice_id].append(
                {k: v for k, v in line._mapping.items() if k not in ("id", "invoice_id")}
            )
        for inv in invoices:
            inv["lines"] = by_invoice[inv["id"]]
    return invoices
