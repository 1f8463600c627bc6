"""Auto-recharge: when a settled charge takes a prepaid tenant's credit below its threshold, charge the card on
file once for that crossing, from a background job.

The hot path pays one sub-select (ARMABLE, part of the statement charge_usage already runs) and, only when a
tenant crosses, one UPDATE and one enqueue in the same transaction as the charge. Arming sets
`auto_recharge_pending` to the crossing's key (`lgw-ar-<tenant>-<n>`) under the account lock the charge
already holds, so however many requests cross at once, one job is queued; no other is armed until that one
has settled (credit), failed (auto-recharge turned off, the reason kept) or been found stale. The key is also
the Stripe idempotency key of the charge: a job run twice pays once.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from billing.errors import InvalidBillingInput, UnknownAccount
from billing.models import BillingAccount
from billing.sql import Queries

ENTRYPOINT = "billing_auto_recharge"
ACCOUNTS = BillingAccount.__table__  # type: ignore[attr-defined]

# The tenants in array parameter {} that may be armed: (tenant, threshold in minor units).
ARMABLE = """
    (SELECT array_agg(ROW(tenant_id, auto_recharge_threshold)) FROM billing_accounts
     WHERE tenant_id = ANY({}::text[]) AND auto_recharge_enabled AND auto_recharge_pending IS NULL)
"""
_ARM = """
    UPDATE billing_accounts
    SET auto_recharge_count = auto_recharge_count + 1,
        auto_recharge_pending = 'lgw-ar-' || tenant_id || '-' || (auto_recharge_count + 1)
    WHERE tenant_id = ANY($1::text[]) AND auto_recharge_enabled AND auto_recharge_pending IS NULL
    RETURNING tenant_id, auto_recharge_pending AS key
"""


@cache
def _enqueue_sql() -> str:
    from pgqueuer.adapters.persistence.qb import QueryQueueBuilder

    return QueryQueueBuilder().build_enqueue_query("skip")


async def enqueue(
    q: Queries, jobs: list[tuple[str, str]], delay: timedelta = timedelta(0), dedupe: str | None = None
) -> None:
    """Recharge jobs for (tenant, crossing key) pairs, in the caller's transaction (the key dedupes, unless
    `dedupe` is given: a retry of a crossing whose first job is still running)."""
    n = len(jobs)
    payloads = [json.dumps({"tenant_id": t, "key": k}).encode() for t, k in jobs]
    keys = [dedupe or k for _, k in jobs]
    await q.fetch(_enqueue_sql(), [0] * n, [ENTRYPOINT] * n, payloads, [delay] * n, keys, ["null"] * n)


async def arm(q: Queries, tenant_ids: list[str]) -> list[tuple[str, str]]:
    """Arm the tenants that crossed (the caller holds their account locks) and queue one job each."""
    jobs = [(r["tenant_id"], r["key"]) for r in await q.fetch(_ARM, tenant_ids)]
    if jobs:
        await enqueue(q, jobs)
    return jobs


def config_json(row: Any) -> dict[str, Any]:
    return {
        "object": "auto_recharge",
        "enabled": row.auto_recharge_enabled,
        "threshold": row.auto_recharge_threshold,
        "amount": row.auto_recharge_amount,
        "in_flight": row.auto_recharge_pending is not None,
        "disabled_reason": row.auto_recharge_error,
        "disabled_at": int(row.auto_recharge_error_at.timestamp()) if row.auto_recharge_error_at else None,
    }


async def read(conn: AsyncConnection, tenant_id: str, *, lock: bool = False) -> Any:
    stmt = sa.select(ACCOUNTS).where(ACCOUNTS.c.tenant_id == tenant_id)
    row = (await conn.execute(stmt.with_for_update() if lock else stmt)).first()
    if row is None:
        raise UnknownAccount(f"No billing account for tenant {tenant_id!r}.")
    return row


async def configure(
    conn: AsyncConnection, tenant_id: str, enabled: bool, threshold: int, amount: int, bounds: tuple[int, int]
) -> Any:
    """Turn auto-recharge on or off; on: a prepaid account with a card, an amount within the top-up bounds."""
    row = await read(conn, tenant_id, lock=True)
    if threshold < 0:
        raise InvalidBillingInput("threshold must be ≥ 0 (minor units).", param="threshold")
    if enabled:
        if row.mode != "prepaid":
            raise InvalidBillingInput(
                "Auto-recharge is for prepaid accounts; this account is postpaid (usage is invoiced).", param="enabled"
            )
        if not (bounds[0] <= amount <= bounds[1]):
            raise InvalidBillingInput(
                f"amount must be between {bounds[0]} and {bounds[1]} (minor units).", param="amount"
            )
        if row.stripe_payment_method_id is None:
            raise InvalidBillingInput("Add a card first: auto-recharge charges the card on file.", param="enabled")
    values: dict[str, Any] = {"auto_recharge_enabled": enabled, "auto_recharge_threshold": threshold,
                              "auto_recharge_amount": amount}  # fmt: skip
    if enabled:
        values.update(auto_recharge_error=None, auto_recharge_error_at=None)
    await conn.execute(sa.update(ACCOUNTS).where(ACCOUNTS.c.tenant_id == tenant_id).values(values))
    return await read(conn, tenant_id)


async def disable(conn: AsyncConnection, tenant_id: str, reason: str, key: str | None = None) -> bool:
    """Turn auto-recharge off and say why (a declined card, authentication needed, no card); False if `key` is
    given and is no longer the crossing in flight."""
    stmt = sa.update(ACCOUNTS).where(ACCOUNTS.c.tenant_id == tenant_id)
    if key is not None:
        stmt = stmt.where(ACCOUNTS.c.auto_recharge_pending == key)
    values = {"auto_recharge_enabled": False, "auto_recharge_pending": None, "auto_recharge_error": reason[:1000],
              "auto_recharge_error_at": datetime.now(UTC)}  # fmt: skip
    return bool((await conn.execute(stmt.values(values))).rowcount)


async def release(conn: AsyncConnection, tenant_id: str, key: str) -> None:
    """The crossing `key` is over (its recharge credited): the next crossing may arm."""
    await conn.execute(
        sa.update(ACCOUNTS)
        .where(ACCOUNTS.c.tenant_id == tenant_id, ACCOUNTS.c.auto_recharge_pending == key)
        .values(auto_recharge_pending=None)
    )
