"""The operator's billing changes: each runs billing's logic and writes its audit row in one transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from billing import invoices, ledger, prices
from gateway.accounts.schemas import ClosePeriod, CreditCreate, PriceCreate, balance_json
from gateway.audit import service as audit
from gateway.audit.service import Actor
from gateway.db import db_errors


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}


async def set_price(db: AsyncEngine, actor: Actor, data: PriceCreate, billing_currency: str) -> dict[str, Any]:
    """A new price version for a base model or a deployment; never re-rates the past."""
    async with db_errors(), db.begin() as conn:
        price = await prices.set_price(
            conn,
            data.model,
            data.prompt_per_million,
            data.completion_per_million,
            data.currency or billing_currency,
            data.effective_from,
            billing_currency=billing_currency,
            training_per_million=data.training_per_million,
        )
        await audit.record(conn, actor, "price.set", data.model, _jsonable(price))
    return price


async def add_credit(db: AsyncEngine, actor: Actor, tenant_id: str, data: CreditCreate) -> dict[str, Any]:
    """A prepaid top-up (minor units) and the tenant's balance after it."""
    async with db_errors(), db.begin() as conn:
        entry = await ledger.add_entry(conn, tenant_id, "credit", data.amount, data.note or None, data.idempotency_key)
        balance = balance_json(await ledger.balance(conn, tenant_id))
        detail = {"amount": data.amount, "note": data.note, "entry_id": entry["id"]}
        await audit.record(conn, actor, "credit.add", tenant_id, detail)
    return {"object": "credit", "id": entry["id"], "tenant_id": tenant_id, "amount": data.amount, "balance": balance}


async def close_period(db: AsyncEngine, actor: Actor, data: ClosePeriod) -> list[dict[str, Any]]:
    """One invoice per tenant with charges in the period (closing again returns the same invoices)."""
    async with db_errors(), db.begin() as conn:
        closed = await invoices.close_period(conn, data.period)
        await audit.record(conn, actor, "billing.close_period", data.period, None)
    return closed
