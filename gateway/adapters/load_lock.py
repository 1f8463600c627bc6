"""One adapter load per engine at a time across every gateway process and host: a PostgreSQL advisory lock."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db import guarded
from gateway.engine.pool import LoadGuard

_LOCK = sa.text("SELECT pg_advisory_lock(hashtextextended(:k, 4417))")
_UNLOCK = sa.text("SELECT pg_advisory_unlock(hashtextextended(:k, 4417))")


def load_lock(db: AsyncEngine) -> LoadGuard:
    """A LoadGuard for EnginePool: a process that wants to load adapter X on engine E waits while another loads
    it, then asks the engine itself, which answers "already loaded"."""

    @contextlib.asynccontextmanager
    async def guard(engine_url: str, adapter_id: str) -> AsyncIterator[None]:
        key = f"{engine_url}|{adapter_id}"
        async with guarded(), db.connect() as conn:
            await conn.execute(_LOCK, {"k": key})
            await conn.commit()  # a session lock: it outlives this statement's transaction
            try:
                yield
            finally:
                # If the database went away, so did the lock (it dies with its connection).
                with contextlib.suppress(DBAPIError, OSError):
                    await conn.execute(_UNLOCK, {"k": key})
                    await conn.commit()

    return guard
