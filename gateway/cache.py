"""In-process caches of rarely changing rows, dropped across processes by PostgreSQL LISTEN/NOTIFY.

Triggers on `api_keys`, `tenants` and `adapters` (migration 20261126_0008) send `key:<id>`, `tenant:<id>` or
`adapter:<tenant id>` on the `gateway_cache` channel in the transaction that changes a row, so every gateway
process hears of the change when it commits. Each process keeps one listening connection. While it is not
connected (start-up, a lost connection, PostgreSQL down) the caches serve nothing and store nothing: every
lookup goes to the database, so a change is never missed for longer than the time it takes to notice the
loss (a ping every `ttl_s / 2`). Entries also expire after `ttl_s` whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

import asyncpg

from gateway.admission.retry import Backoff

log = logging.getLogger(__name__)

CHANNEL = "gateway_cache"
V = TypeVar("V")


class Invalidations:
    """This process's LISTEN connection. `generation` changes with every notification and every (dis)connect:
    a value read from the database is cached only if the generation is the same as before the read, so a read
    that raced with a change is never kept."""

    def __init__(self, dsn: str, ping_every_s: float = 2.0, backoff: Backoff | None = None) -> None:
        self._dsn = dsn
        self._backoff = backoff or Backoff(0.2, 2.0)
        self._ping_every_s = ping_every_s
        self.live = False
        self.generation = 0
        self._subscribers: list[Callable[[str, str], None]] = []
        self._lost = asyncio.Event()

    def subscribe(self, drop: Callable[[str, str], None]) -> None:
        """`drop(kind, ident)` on each notification; `drop("*", "")` when the connection is lost."""
        self._subscribers.append(drop)

    def _publish(self, kind: str, ident: str) -> None:
        self.generation += 1
        for drop in self._subscribers:
            drop(kind, ident)

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        kind, _, ident = payload.partition(":")
        self._publish(kind, ident)

    def _down(self, stopping: bool = False) -> None:
        if self.live and not stopping:
            log.warning("cache invalidation channel lost: caches bypassed until it is back")
        self.live = False
        self._publish("*", "")

    async def run(self) -> None:
        """Listen until cancelled, reconnecting with backoff."""
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(
                    self._dsn, timeout=5, server_settings={"application_name": "gateway-cache-listener"}
                )
                self._lost.clear()
                conn.add_termination_listener(lambda c: self._lost.set())
                await conn.add_listener(CHANNEL, self._on_notify)
                self._publish("*", "")  # anything cached before this point may have missed a notification
                self.live = True
                self._backoff.reset()
                while not self._lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._lost.wait(), self._ping_every_s)
                    if not self._lost.is_set():
                        await conn.fetchval("SELECT 1", timeout=self._ping_every_s)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.info("cache invalidation channel: %s; retrying in %.1fs", exc, self._backoff.next_s)
            finally:
                task = asyncio.current_task()
                self._down(stopping=task is not None and task.cancelling() > 0)  # shutdown is not a loss
                if conn is not None:
                    conn.terminate()
            await self._backoff.wait()


class TtlCache(Generic[V]):
    """Entries for at most `ttl_s`, only while the invalidation channel is live."""

    def __init__(self, channel: Invalidations, ttl_s: float, max_entries: int = 50_000) -> None:
        self._channel = channel
        self._ttl_s = ttl_s
        self._max = max_entries
        self._entries: dict[Hashable, tuple[float, V]] = {}

    def get(self, key: Hashable) -> V | None:
        if not self._channel.live:
            return None
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            del self._entries[key]
            return None
        return entry[1]

    def token(self) -> int:
        """Take before reading the database; give to `put`."""
        return self._channel.generation

    def put(self, key: Hashable, value: V, token: int) -> None:
        if self._ttl_s <= 0 or not self._channel.live or token != self._channel.generation:
            return
        if len(self._entries) >= self._max:
            self._entries.clear()
        self._entries[key] = (time.monotonic() + self._ttl_s, value)

    def drop(self, keep: Callable[[V], bool] | None = None) -> None:
        """Drop every entry, or those for which `keep` is false."""
        if keep is None:
            self._entries.clear()
        else:
            self._entries = {k: e for k, e in self._entries.items() if keep(e[1])}
