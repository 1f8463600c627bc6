"""Group commit: what callers submit while one transaction runs goes together into the next one.

One task drains the queue: it takes up to `max_batch` items, runs `commit(conn, items)` in one transaction on
one pooled connection, and once that has committed resolves each caller's future with the outcome `commit`
returned for its item (a value, or an exception such as a refusal). A failed transaction fails every item of
its batch (DatabaseUnavailable when the database is unreachable, see `guarded`); with `retry_for_s` the batch
is first tried again, with backoff, for that long. `commit` may raise `Again` to roll back and start the same
batch over at once (it found that it must take its locks in another order). The task exists only while there
is work; `flush()` waits for it.

A caller that stops waiting cancels its future: an item not yet taken is dropped, one whose batch was running
has its (committed) outcome handed to `abandoned(item, outcome)` so that it can be undone.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import asyncpg

from gateway.admission.retry import Backoff, retry
from gateway.admission.stopwatch import Observer, Stopwatch, ignore
from gateway.db import guarded
from gateway.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# Runs in the batch's transaction; returns one outcome per item, in order: its result, or the exception its
# caller gets (the transaction still commits what the others did).
Commit = Callable[[asyncpg.Connection, list[T]], Awaitable[Sequence[R | Exception]]]


class Again(Exception):
    """Raised by a commit function: roll the transaction back and run the same batch again at once."""


@dataclass(slots=True)
class _Entry(Generic[T, R]):
    item: T
    future: asyncio.Future[R] | None  # None: nobody waits (its failure is logged, not raised)


class GroupCommit(Generic[T, R]):
    def __init__(
        self,
        pool: asyncpg.Pool,
        commit: Commit[T, R],
        *,
        name: str,
        max_batch: int = 512,
        observe: Observer = ignore,
        retry_for_s: float = 0.0,
        backoff: Backoff | None = None,
        committed: Callable[[list[T], Sequence[R | Exception]], None] | None = None,
        abandoned: Callable[[T, R], None] | None = None,
    ) -> None:
        """`observe(seconds, items)` is told of each commit; `committed(items, outcomes)` is called after each
        commit, before the futures are resolved."""
        self._pool = pool
        self._commit = commit
        self.name = name
        self.max_batch = max_batch
        self.observe = observe
        self._retry_for_s = retry_for_s
        self._backoff = backoff or Backoff()
        self._committed = committed
        self._abandoned = abandoned
        self._queue: deque[_Entry[T, R]] = deque()
        self._woken = False
        self._task: asyncio.Task[None] | None = None

    def submit(self, item: T) -> asyncio.Future[R]:
        """Queue `item`; the future is resolved with its outcome once its batch has committed (or failed)."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append(_Entry(item, future))
        self._start()
        return future

    def push(self, item: T) -> None:
        """Queue `item` with nobody waiting for it."""
        self._queue.append(_Entry(item, None))
        self._start()

    def wake(self) -> None:
        """Run a batch soon even if nothing is queued (the commit function has other work of its own)."""
        self._woken = True
        self._start()

    async def flush(self) -> None:
        """Wait until everything queued so far is committed (or failed)."""
        while self._task is not None:
            await asyncio.shield(self._task)

    def _start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._drain(), name=self.name)

    async def _drain(self) -> None:
        try:
            while self._queue or self._woken:
                self._woken = False
                batch: list[_Entry[T, R]] = []
                while self._queue and len(batch) < self.max_batch:
                    entry = self._queue.popleft()
                    if entry.future is None or not entry.future.cancelled():  # a cancelled one: nobody wants it
                        batch.append(entry)
                await self._run(batch)
        finally:
            self._task = None

    async def _run(self, batch: list[_Entry[T, R]]) -> None:
        items = [e.item for e in batch]
        watch = Stopwatch()
        try:
            if self._retry_for_s > 0:
                outcomes = await retry(
                    lambda: self._transaction(items),
                    transient=lambda exc: isinstance(exc, DatabaseUnavailable),
                    for_s=self._retry_for_s,
                    backoff=self._backoff,
                    on_retry=lambda exc, delay: log.warning(
                        "database unreachable during %s of %d items; retrying in %.1fs", self.name, len(items), delay
                    ),
                )
            else:
                outcomes = await self._transaction(items)
        except Exception as exc:  # handed to every caller still waiting, none swallowed
            if not isinstance(exc, DatabaseUnavailable):
                log.exception("%s failed for %d items", self.name, len(items))
            elif any(e.future is None for e in batch):
                log.warning("database unavailable: %s of %d items dropped", self.name, len(items))
            for e in batch:
                if e.future is not None and not e.future.done():
                    e.future.set_exception(exc)
            return
        watch.finished(self.observe, len(items), log, "%s of %d items", self.name, len(items))
        if self._committed is not None:
            self._hook(self._committed, items, outcomes)
        for e, outcome in zip(batch, outcomes, strict=True):
            future = e.future
            if future is None:
                continue
            if future.cancelled():  # the caller stopped waiting while the batch ran
                if self._abandoned is not None and not isinstance(outcome, Exception):
                    self._hook(self._abandoned, e.item, outcome)
            elif isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    def _hook(self, hook: Callable[..., None], *args: Any) -> None:
        """A hook's bug is logged: the batch is committed, its callers must still hear of it."""
        try:
            hook(*args)
        except Exception:
            log.exception("%s: %s failed after the commit", self.name, getattr(hook, "__name__", hook))

    async def _transaction(self, items: list[T]) -> Sequence[R | Exception]:
        while True:
            try:
                async with guarded(), self._pool.acquire() as conn, conn.transaction():
                    outcomes = await self._commit(conn, items)
                    if len(outcomes) != len(items):  # a bug: rolled back
                        raise AssertionError(f"{self.name}: {len(outcomes)} outcomes for {len(items)} items")
                return outcomes
            except Again:
                continue
