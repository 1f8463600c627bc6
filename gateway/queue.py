"""The background job queue: pgqueuer on the same PostgreSQL (asyncpg, like the rest of the code).

Jobs are enqueued inside the caller's own transaction, so a job exists exactly when the row that asked for it
does. A job whose worker stops heartbeating (kill -9) is picked again by another worker after the heartbeat
timeout; handlers must therefore be idempotent (the fine-tuning handler checks its job row first).
The schema is pgqueuer's own DDL, applied by an Alembic migration (`install_sql`).
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import asyncpg
from sqlmodel.ext.asyncio.session import AsyncSession

FINE_TUNE = "fine_tune"
EXPIRE_UPLOAD = "expire_upload"
# Payments (gateway/payments/jobs.py): auto-recharge jobs are enqueued by billing itself, inside the usage
# transaction (billing/auto_recharge.py); the dunning check is a pgqueuer schedule.
AUTO_RECHARGE = "billing_auto_recharge"
DUNNING = "billing_dunning"


def install_sql() -> str:
    """pgqueuer's tables, types, trigger and notify function (the migration runs this)."""
    from pgqueuer.adapters.persistence.qb import QueryBuilderEnvironment

    return QueryBuilderEnvironment().build_install_query(create_schema=False)


def uninstall_sql() -> str:
    from pgqueuer.adapters.persistence.qb import QueryBuilderEnvironment

    return QueryBuilderEnvironment().build_uninstall_query()


async def enqueue(
    conn: asyncpg.Connection,
    entrypoint: str,
    payload: dict[str, Any],
    *,
    delay: timedelta | None = None,
    dedupe_key: str | None = None,
) -> int:
    """One job, in `conn`'s current transaction."""
    from pgqueuer import Queries

    ids = await Queries.from_asyncpg_connection(conn).enqueue(
        entrypoint, json.dumps(payload).encode(), execute_after=delay, dedupe_key=dedupe_key
    )
    return int(ids[0])


async def enqueue_in(
    session: AsyncSession, entrypoint: str, payload: dict[str, Any], *, delay: timedelta | None = None
) -> int:
    """One job in the session's transaction (committed with the session's own writes)."""
    conn = await session.connection()
    raw = await conn.get_raw_connection()
    return await enqueue(raw.driver_connection, entrypoint, payload, delay=delay)  # type: ignore[arg-type]


def payload_of(job: Any) -> dict[str, Any]:
    """The JSON payload of a pgqueuer job."""
    return dict(json.loads(job.payload or b"{}"))
