"""How billing's shared statements run: asyncpg's calling convention ($1 parameters; `fetch` returns rows that
read by column name), on an asyncpg connection (the per-request metering path) or on an SQLAlchemy connection
wrapped by `Alchemy` (admin, invoices, webhooks), in the caller's transaction either way."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from billing.errors import BillingError


class Queries(Protocol):
    async def fetch(self, query: str, *args: Any) -> Sequence[Mapping[Any, Any]]: ...

    async def execute(self, query: str, *args: Any) -> Any: ...


class Alchemy:
    """An SQLAlchemy connection (its dialect also takes $1 parameters) seen as `Queries`."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def fetch(self, query: str, *args: Any) -> Sequence[Mapping[Any, Any]]:
        return (await self._conn.exec_driver_sql(query, args)).mappings().all()

    async def execute(self, query: str, *args: Any) -> Any:
        await self._conn.exec_driver_sql(query, args)


def unnest(columns: Sequence[tuple[str, str]], first: int = 1) -> str:
    """`unnest($first::type[], …)` over (column, PostgreSQL type) pairs: one array parameter per column, so a
    multi-row statement has the same text for any number of rows (prepared once per connection)."""
    return f"unnest({', '.join(f'${i}::{t}[]' for i, (_, t) in enumerate(columns, first))})"


@asynccontextmanager
async def duplicate_as(conn: AsyncConnection, error: BillingError) -> AsyncIterator[None]:
    """Run the block in a savepoint: a duplicate key raises `error` (named by the caller) and the caller's
    transaction goes on. Billing's own small copy of gateway/db.py's `db_errors`: billing never imports the
    gateway."""
    try:
        async with conn.begin_nested():
            yield
    except IntegrityError as exc:
        if getattr(exc.orig, "sqlstate", None) != "23505":  # unique_violation
            raise
        raise error from exc
