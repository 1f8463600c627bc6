"""Group-committed usage writes: callers wait until their row is durable, many rows share one commit.

The same transaction deletes each request's open row (gateway/admission/open_requests.py), so a request is
either open or metered, never both and never neither; it also applies stream checkpoints (running usage of
open requests, what a crash would leave to bill) and discards open rows of requests that produced nothing.
Served tokens must not be lost to a database blip: a batch is retried while the database is unreachable, for
`retry_for_s` (the clients wait), then its callers get DatabaseUnavailable. Retrying is safe: request_id is
unique.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence

import asyncpg

from gateway.admission import sql
from gateway.admission.group_commit import GroupCommit
from gateway.admission.retry import Backoff
from gateway.admission.stopwatch import Observer, ignore
from gateway.usage.models import UsageRow

# Called inside the usage transaction with the rows that were new: billing rates them there, so a usage row
# and its charge are committed together or not at all.
OnCommit = Callable[[asyncpg.Connection, list[UsageRow]], Awaitable[None]]

# A queued item: a usage row (the request is metered), or a request id (its open row is discarded).
_Item = UsageRow | str


class UsageWriter:
    """Usage rows and discards, group-committed (gateway/admission/group_commit.py); checkpoints ride along."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        max_batch: int = 1000,
        on_commit: OnCommit | None = None,
        retry_for_s: float = 30.0,
        observe: Observer = ignore,
        backoff: Backoff | None = None,
    ) -> None:
        """`observe(seconds, items)` is told of each commit."""
        self._on_commit = on_commit
        self.on_closed: Callable[[str], None] = lambda request_id: None
        # Open streams' latest running usage, request id → (prompt, completion) tokens: kept apart (only the
        # latest per stream), so a flood of chunks never queues up ahead of the usage rows clients wait for.
        self._marks: dict[str, tuple[int, int]] = {}
        self._writing: dict[str, tuple[int, int]] = {}  # the marks of the transaction under way
        self._batches: GroupCommit[_Item, None] = GroupCommit(
            pool,
            self._write,
            name="usage commit",
            max_batch=max_batch,
            observe=observe,
            retry_for_s=retry_for_s,
            backoff=backoff,
            committed=self._committed,
        )

    async def stop(self) -> None:
        """Commit what is queued."""
        await self._batches.flush()

    async def record(self, row: UsageRow) -> None:
        """Return once `row` is committed (and its open row gone); raise DatabaseUnavailable if it could not be.
        If the caller stops waiting, the row is still written."""
        await asyncio.shield(self._batches.submit(row))

    async def discard(self, request_id: str) -> None:
        """Close an open request that is not metered (it never reached the engine)."""
        await asyncio.shield(self._batches.submit(request_id))

    def discard_later(self, request_id: str) -> None:
        """`discard` without waiting for the commit (the caller is gone)."""
        self._batches.push(request_id)

    def checkpoint(self, request_id: str, prompt_tokens: int, completion_tokens: int) -> None:
        """Record an open stream's running usage with the next commit (only the latest one per stream is
        kept); nobody waits for it."""
        self._marks[request_id] = (prompt_tokens, completion_tokens)
        self._batches.wake()

    async def _write(self, conn: asyncpg.Connection, batch: list[_Item]) -> list[None]:
        # One row per request even if a caller submitted twice (a cancelled wait, then a retry).
        rows = list({r["request_id"]: r for r in reversed(batch) if not isinstance(r, str)}.values())
        closing = [r["request_id"] for r in rows] + [r for r in batch if isinstance(r, str)]
        closed = set(closing)
        # The latest checkpoints (a retry takes newer ones); that of a request closed in this batch is moot.
        self._writing = {k: v for k, v in self._marks.items() if k not in closed}
        if rows:
            await self.insert_usage(conn, rows, closing)
        elif closing:
            await conn.execute(sql.CLOSE, closing)
        if self._writing:
            ids = list(self._writing)
            await conn.execute(
                sql.CHECKPOINT, ids, [self._writing[i][0] for i in ids], [self._writing[i][1] for i in ids]
            )
        return [None] * len(batch)

    def _committed(self, batch: list[_Item], outcomes: Sequence[Exception | None]) -> None:
        for item in batch:
            request_id = item if isinstance(item, str) else item["request_id"]
            self._marks.pop(request_id, None)
            self.on_closed(request_id)
        for request_id, mark in self._writing.items():
            if self._marks.get(request_id) == mark:  # not replaced by a newer one meanwhile
                del self._marks[request_id]
        self._writing = {}

    async def insert_usage(
        self, conn: asyncpg.Connection, rows: list[UsageRow], closing: list[str] | None = None
    ) -> None:
        """Insert usage rows (a request_id already metered is skipped), delete the open rows named in `closing`
        and charge the new usage rows, in `conn`'s transaction."""
        plain: Sequence[Mapping[str, object]] = rows
        columns = [[r[c] for r in plain] for c, _ in sql.USAGE_COLUMNS]
        new = {r["request_id"] for r in await conn.fetch(sql.INSERT_USAGE, closing or [], *columns)}
        if self._on_commit is not None and new:
            await self._on_commit(conn, [r for r in rows if r["request_id"] in new])
