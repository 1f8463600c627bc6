"""Group-committed usage writes: callers wait until their row is durable, many rows share one commit.

The same transaction deletes each request's open row (gateway/usage/open_requests.py), so a request is either
open or metered, never both and never neither; it also applies stream checkpoints (running usage of open
requests, what a crash would leave to bill) and discards open rows of requests that produced nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import asyncpg

from billing.sql import unnest
from gateway.db import is_unavailable
from gateway.errors import DatabaseUnavailable
from gateway.usage.stopwatch import Observer, Stopwatch, ignore

log = logging.getLogger(__name__)

# (column, PostgreSQL array type) of a usage row, in the order of usage_row().
_COLUMNS = (
    ("request_id", "text"), ("tenant_id", "text"), ("api_key_id", "text"), ("model", "text"),
    ("base_model", "text"), ("adapter_id", "text"), ("endpoint", "text"), ("stream", "boolean"),
    ("prompt_tokens", "integer"), ("completion_tokens", "integer"), ("status", "text"), ("http_status", "integer"),
    ("started_at", "timestamptz"), ("finished_at", "timestamptz"), ("latency_ms", "integer"),
)  # fmt: skip
# One array parameter per column: the same statement text for any batch size, prepared once per connection
# (a multi-row VALUES was compiled again for every batch: most of the writer's CPU in the profile).
# A request_id already present means the row was written: never count a request twice.
# The open rows named in :closing are deleted by the same statement (one round trip less per batch).
_INSERT = (
    "WITH closed AS (DELETE FROM open_requests WHERE request_id = ANY($1::text[])) "
    f"INSERT INTO usage_records ({', '.join(c for c, _ in _COLUMNS)}) "
    f"SELECT * FROM {unnest(_COLUMNS, 2)} "
    "ON CONFLICT (request_id) DO NOTHING RETURNING request_id"
)
_CLOSE = "DELETE FROM open_requests WHERE request_id = ANY($1::text[])"
_CHECKPOINT = """
    UPDATE open_requests o SET prompt_tokens = c.p, completion_tokens = c.c, checkpoint_at = now()
    FROM unnest($1::text[], $2::integer[], $3::integer[]) AS c(id, p, c)
    WHERE o.request_id = c.id
"""


# Called inside the usage transaction with the rows that were new: billing rates them there, so a usage row
# and its charge are committed together or not at all.
OnCommit = Callable[[asyncpg.Connection, list[dict[str, Any]]], Awaitable[None]]

# Queue items: (kind, payload, future or None). Kinds: "usage" (a row), "discard" (a request id), "wake"
# (checkpoints are waiting; they are kept apart, the latest per stream, so a flood of chunks never queues up
# ahead of the usage rows that clients wait for).
_Item = tuple[str, Any, "asyncio.Future[None] | None"]


class UsageWriter:
    """One background task drains a queue of rows and inserts each batch in a single transaction."""

    def __init__(
        self, pool: asyncpg.Pool, max_batch: int = 1000, on_commit: OnCommit | None = None, retry_for_s: float = 30.0
    ) -> None:
        self._pool = pool
        self._retry_for_s = retry_for_s
        self._on_commit = on_commit
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.on_closed: Callable[[str], None] = lambda request_id: None
        self.timed: Observer = ignore  # each commit's duration and usage rows + discards
        self._marks: dict[str, tuple[str, int, int]] = {}  # request id → its latest running usage

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="usage-writer")

    async def stop(self) -> None:
        """Commit what is queued, then stop."""
        if self._task is None:
            return
        await self._queue.join()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def record(self, row: dict[str, Any]) -> None:
        """Return once `row` is committed (and its open row gone); raise DatabaseUnavailable if it could not be."""
        await self._submit("usage", row)

    async def discard(self, request_id: str) -> None:
        """Close an open request that is not metered (it never reached the engine)."""
        await self._submit("discard", request_id)

    def discard_later(self, request_id: str) -> None:
        """`discard` without waiting for the commit (the caller is gone)."""
        self._queue.put_nowait(("discard", request_id, None))

    def checkpoint(self, request_id: str, prompt_tokens: int, completion_tokens: int) -> None:
        """Record an open stream's running usage with the next commit (only the latest one per stream is
        kept); nobody waits for it."""
        if not self._marks:
            self._queue.put_nowait(("wake", None, None))
        self._marks[request_id] = (request_id, prompt_tokens, completion_tokens)

    async def _submit(self, kind: str, payload: Any) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((kind, payload, future))
        await asyncio.shield(future)

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            marks, self._marks = self._marks, {}
            try:
                await self._write_patiently(batch, marks)
            except Exception as exc:
                error: BaseException = DatabaseUnavailable() if is_unavailable(exc) else exc
                if not is_unavailable(exc):
                    log.exception("usage write failed for %d items", len(batch))
                for _, _, fut in batch:
                    if fut is not None and not fut.done():
                        fut.set_exception(error)
            else:
                for kind, payload, fut in batch:
                    if kind != "wake":
                        self.on_closed(payload["request_id"] if kind == "usage" else payload)
                    if fut is not None and not fut.done():
                        fut.set_result(None)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _write_patiently(self, batch: list[_Item], marks: dict[str, tuple[str, int, int]]) -> None:
        """Served tokens must not be lost to a database blip: retry an unreachable database for a while
        (the clients wait), then give up with DatabaseUnavailable. Retrying is safe: request_id is unique."""
        watch = Stopwatch()
        deadline = time.monotonic() + self._retry_for_s
        delay = 0.1
        while True:
            try:
                await self._write(batch, marks)
                rows = sum(kind != "wake" for kind, _, _ in batch)
                what = "usage commit of %d items, %d checkpoints"
                watch.finished(self.timed, rows, log, what, len(batch), len(marks))
                return
            except Exception as exc:
                if not is_unavailable(exc) or time.monotonic() + delay > deadline:
                    raise
                log.warning("database unreachable while writing %d usage items; retrying in %.1fs", len(batch), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _write(self, batch: list[_Item], marks: dict[str, tuple[str, int, int]]) -> None:
        # One row per request even if a caller submitted twice (a cancelled wait, then a retry).
        rows = list({p["request_id"]: p for kind, p, _ in reversed(batch) if kind == "usage"}.values())
        closing = [r["request_id"] for r in rows] + [p for kind, p, _ in batch if kind == "discard"]
        # A checkpoint of a request closed in this batch is moot.
        if closing:
            closed = set(closing)
            marks = {k: v for k, v in marks.items() if k not in closed}
        async with self._pool.acquire() as conn, conn.transaction():
            if rows:
                await self.insert_usage(conn, rows, closing)
            elif closing:
                await conn.execute(_CLOSE, closing)
            if marks:
                ids, ps, cs = zip(*marks.values(), strict=True)
                await conn.execute(_CHECKPOINT, list(ids), list(ps), list(cs))

    async def insert_usage(
        self, conn: asyncpg.Connection, rows: list[dict[str, Any]], closing: list[str] | None = None
    ) -> None:
        """Insert usage rows (a request_id already metered is skipped), delete the open rows named in `closing`
        and charge the new usage rows, in `conn`'s transaction."""
        columns = [[r[c] for r in rows] for c, _ in _COLUMNS]
        new = {r["request_id"] for r in await conn.fetch(_INSERT, closing or [], *columns)}
        if self._on_commit is not None and new:
            await self._on_commit(conn, [r for r in rows if r["request_id"] in new])


def usage_row(
    *,
    request_id: str,
    tenant_id: str,
    api_key_id: str,
    model: str,
    base_model: str,
    adapter_id: str | None,
    endpoint: str,
    stream: bool,
    prompt_tokens: int,
    completion_tokens: int,
    status: str,
    http_status: int,
    started_at: datetime,
    finished_at: datetime,
) -> dict[str, Any]:
    """A usage_records row as a plain dict (no ORM object on the hot path)."""
    return {
        "request_id": request_id,
        "tenant_id": tenant_id,
        "api_key_id": api_key_id,
        "model": model,
        "base_model": base_model,
        "adapter_id": adapter_id,
        "endpoint": endpoint,
        "stream": stream,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "status": status,
        "http_status": http_status,
        "started_at": started_at,
        "finished_at": finished_at,
        "latency_ms": int((finished_at - started_at).total_seconds() * 1000),
    }
