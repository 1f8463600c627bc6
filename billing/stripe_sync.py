"""Drain the Stripe outbox: each closed invoice reaches Stripe exactly once, however long Stripe is away.

Rows are claimed with FOR UPDATE SKIP LOCKED, so any number of processes may drain at once. A row stays
locked while its invoice is pushed; a failed try leaves everything as it was except the row's attempts,
last_error and next_attempt_at (exponential backoff, capped). Stripe's ids are stored as soon as Stripe
hands them out, each in its own short transaction, so they survive a later failure.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
import stripe
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from billing import collection
from billing.errors import StripeRejected, StripeUnavailable
from billing.invoices import LINES, OUTBOX
from billing.ledger import ACCOUNTS, INVOICES
from billing.settings import BillingSettings
from billing.stripe_api import (
    InvoiceToPush,
    create_customer,
    create_subscription,
    ensure_plan,
    push_invoice,
    stripe_client,
)

log = logging.getLogger(__name__)


@dataclass
class SyncReport:
    synced: list[str] = field(default_factory=list)  # our invoice ids now in Stripe
    failed: dict[str, str] = field(default_factory=dict)  # invoice id → error, retried later


def backoff(attempts: int, settings: BillingSettings) -> timedelta:
    """Delay before the next try after `attempts` tries: base · 2^(attempts−1), at most the cap."""
    seconds = settings.stripe_backoff_base_seconds * 2 ** min(max(attempts - 1, 0), 30)
    return timedelta(seconds=min(seconds, settings.stripe_backoff_cap_seconds))


async def sync_once(
    db: AsyncEngine, settings: BillingSettings, *, now: datetime | None = None, limit: int = 1000
) -> SyncReport:
    """One pass over the due outbox rows (at most `limit`). Stops early when Stripe is unreachable.

    `now` decides which rows are due and is the base of the backoff (tests move it forward).
    """
    now = now or datetime.now(UTC)
    report = SyncReport()
    async with stripe_client(settings) as client:
        for _ in range(limit):
            async with db.begin() as conn:
                row = await _claim_due(conn, now)
                if row is None:
                    break
                try:
                    stripe_id = await _push(db, conn, client, row.invoice_id, settings)
                except (StripeUnavailable, StripeRejected) as exc:
                    await _postpone(conn, row, exc.message, now, settings)
                    report.failed[row.invoice_id] = exc.message
                    if isinstance(exc, StripeUnavailable):
                        log.warning("Stripe sync of %s postponed: %s", row.invoice_id, exc.message)
                        break  # Stripe is away: leave the other rows for the next pass
                    log.error("Stripe sync of %s refused: %s", row.invoice_id, exc.message)
                    continue
                await _mark_done(conn, row, stripe_id, now)
                report.synced.append(row.invoice_id)
    return report


async def run_forever(db: AsyncEngine, settings: BillingSettings) -> None:
    """The worker: drain the outbox every STRIPE_SYNC_INTERVAL_SECONDS until cancelled."""
    while True:
        try:
            report = await sync_once(db, settings)
            if report.synced:
                log.info("synced %d invoices to Stripe", len(report.synced))
        except (SQLAlchemyError, OSError) as exc:
            log.warning("Stripe sync pass failed (database): %s", exc)
        await asyncio.sleep(settings.stripe_sync_interval_seconds)


async def _claim_due(conn: AsyncConnection, now: datetime) -> Any:
    stmt = (
        sa.select(OUTBOX)
        .where(OUTBOX.c.status == "pending", OUTBOX.c.next_attempt_at <= now)
        .order_by(OUTBOX.c.next_attempt_at, OUTBOX.c.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    return (await conn.execute(stmt)).first()


async def _push(
    db: AsyncEngine, conn: AsyncConnection, client: stripe.StripeClient, invoice_id: str, settings: BillingSettings
) -> str:
    inv = (await conn.execute(sa.select(INVOICES).where(INVOICES.c.id == invoice_id))).one()
    if inv.stripe_invoice_id:
        return str(inv.stripe_invoice_id)
    lines = await conn.execute(sa.select(LINES).where(LINES.c.invoice_id == invoice_id).order_by(LINES.c.id))
    account = (await conn.execute(sa.select(ACCOUNTS).where(ACCOUNTS.c.tenant_id == inv.tenant_id))).one()
    customer_id, sub_id = account.stripe_customer_id, account.stripe_subscription_id
    if not customer_id or not sub_id:
        # a read comes first in every push (here, or the invoice lookup in push_invoice): a Stripe that is
        # away is noticed before anything is written
        plan_id = await ensure_plan(client, account.currency)
        if not customer_id:
            created = await create_customer(client, inv.tenant_id)
            customer_id = await _store(db, inv.tenant_id, "stripe_customer_id", created)
        if not sub_id:
            sub = await create_subscription(client, customer_id, inv.tenant_id, plan_id)
            sub_id = await _store(db, inv.tenant_id, "stripe_subscription_id", sub)
    to_push = InvoiceToPush(inv.id, inv.tenant_id, inv.period, inv.currency, [dict(r._mapping) for r in lines])
    stripe_id = await push_invoice(client, to_push, customer_id, sub_id, settings.stripe_auto_advance)
    await collection.collect(db, client, inv.id, stripe_id, settings)
    return stripe_id


async def _store(db: AsyncEngine, tenant_id: str, column: str, value: str) -> str:
    """Keep a Stripe id on the account at once; if another process stored one first, use that one."""
    col = ACCOUNTS.c[column]
    async with db.begin() as conn:
        await conn.execute(
            sa.update(ACCOUNTS).where(ACCOUNTS.c.tenant_id == tenant_id, col.is_(None)).values({column: value})
        )
        stored = (await conn.execute(sa.select(col).where(ACCOUNTS.c.tenant_id == tenant_id))).scalar_one()
    return str(stored)


async def _postpone(conn: AsyncConnection, row: Any, error: str, now: datetime, settings: BillingSettings) -> None:
    attempts = row.attempts + 1
    await conn.execute(
        sa.update(OUTBOX)
        .where(OUTBOX.c.id == row.id)
        .values(attempts=attempts, next_attempt_at=now + backoff(attempts, settings), last_error=error[:1000])
    )


async def _mark_done(conn: AsyncConnection, row: Any, stripe_invoice_id: str, now: datetime) -> None:
    await conn.execute(
        sa.update(INVOICES).where(INVOICES.c.id == row.invoice_id).values(stripe_invoice_id=stripe_invoice_id)
    )
    await conn.execute(
        sa.update(OUTBOX)
        .where(OUTBOX.c.id == row.id)
        .values(status="done", attempts=row.attempts + 1, done_at=now, last_error=None)
    )
