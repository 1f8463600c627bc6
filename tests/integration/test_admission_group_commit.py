"""The one group-commit helper against a real PostgreSQL: batching, per-item outcomes, retries, cancellation.

No gateway and no engine: GroupCommit is driven directly, its sleeps on a fake clock. Rows go to the
rate_counters table under subjects of this test's own, so they can be counted after the commit.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from gateway.admission.group_commit import Again, GroupCommit
from gateway.admission.retry import Backoff
from gateway.db import create_pool
from gateway.errors import DatabaseUnavailable
from gateway.settings import DatabaseSettings

WINDOW = datetime(2020, 1, 1, tzinfo=UTC)  # far in the past: no rate limit ever reads these rows
_INSERT = (
    "INSERT INTO rate_counters (subject, window_start, requests, tokens) SELECT s, $2, 1, 0 FROM unnest($1::text[]) s"
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(DatabaseSettings(url=database_url))
    yield p
    await p.close()


async def written(pool: asyncpg.Pool, prefix: str) -> list[str]:
    rows = await pool.fetch("SELECT subject FROM rate_counters WHERE subject LIKE $1 ORDER BY subject", prefix + "%")
    return [r["subject"] for r in rows]


async def test_submits_that_arrive_during_a_commit_share_the_next_one(pool: asyncpg.Pool) -> None:
    prefix = f"gc:{secrets.token_hex(4)}:"
    sizes: list[int] = []

    async def commit(conn: asyncpg.Connection, items: list[str]) -> list[tuple[int, str]]:
        await conn.execute(_INSERT, items, WINDOW)
        txid = await conn.fetchval("SELECT txid_current()")
        await conn.execute("SELECT pg_sleep(0.05)")  # later submits queue up meanwhile
        return [(txid, item) for item in items]

    batches: GroupCommit[str, tuple[int, str]] = GroupCommit(
        pool, commit, name="test", max_batch=20, observe=lambda s, n: sizes.append(n)
    )
    first = batches.submit(prefix + "000")
    await asyncio.sleep(0.02)  # its transaction is under way
    items = [f"{prefix}{i:03d}" for i in range(1, 50)]
    rest = [batches.submit(item) for item in items]
    results = await asyncio.gather(first, *rest)

    assert sizes == [1, 20, 20, 9]  # 50 submits, 4 commits, none larger than max_batch
    assert [item for _, item in results] == [prefix + "000", *items]  # each caller got its own outcome
    assert len({txid for txid, _ in results}) == 4  # one transaction per batch
    assert await written(pool, prefix) == [prefix + "000", *items]  # all committed, once


async def test_one_item_refused_does_not_fail_the_others(pool: asyncpg.Pool) -> None:
    prefix = f"gc:{secrets.token_hex(4)}:"

    async def commit(conn: asyncpg.Connection, items: list[int]) -> list[int | Exception]:
        kept = [f"{prefix}{i}" for i in items if i % 2 == 0]
        await conn.execute(_INSERT, kept, WINDOW)
        return [i * 10 if i % 2 == 0 else ValueError(f"odd {i}") for i in items]

    batches: GroupCommit[int, int] = GroupCommit(pool, commit, name="test")
    futures = [batches.submit(i) for i in range(6)]
    outcomes = await asyncio.gather(*futures, return_exceptions=True)
    assert [o if isinstance(o, int) else str(o) for o in outcomes] == [0, "odd 1", 20, "odd 3", 40, "odd 5"]
    assert await written(pool, prefix) == [f"{prefix}{i}" for i in (0, 2, 4)]


async def test_a_failed_transaction_fails_every_caller_and_the_next_batch_runs(pool: asyncpg.Pool) -> None:
    prefix = f"gc:{secrets.token_hex(4)}:"
    calls = 0

    async def commit(conn: asyncpg.Connection, items: list[str]) -> list[None]:
        nonlocal calls
        calls += 1
        await conn.execute(_INSERT, items, WINDOW)
        if calls == 1:
            raise RuntimeError("a bug")  # rolled back
        return [None] * len(items)

    batches: GroupCommit[str, None] = GroupCommit(pool, commit, name="test")
    failed = await asyncio.gather(*(batches.submit(f"{prefix}a{i}") for i in range(3)), return_exceptions=True)
    assert all(isinstance(e, RuntimeError) for e in failed)
    await batches.submit(prefix + "b")
    assert await written(pool, prefix) == [prefix + "b"]


async def test_again_rolls_back_and_runs_the_same_batch_once_more(pool: asyncpg.Pool) -> None:
    prefix = f"gc:{secrets.token_hex(4)}:"
    seen: list[list[str]] = []
    sizes: list[int] = []

    async def commit(conn: asyncpg.Connection, items: list[str]) -> list[None]:
        seen.append(list(items))
        await conn.execute(_INSERT, items, WINDOW)
        if len(seen) == 1:
            raise Again
        return [None] * len(items)

    batches: GroupCommit[str, None] = GroupCommit(pool, commit, name="test", observe=lambda s, n: sizes.append(n))
    await asyncio.gather(*(batches.submit(f"{prefix}{i}") for i in range(3)))
    assert seen == [[f"{prefix}{i}" for i in range(3)]] * 2 and sizes == [3]
    assert await written(pool, prefix) == [f"{prefix}{i}" for i in range(3)]  # the first try left nothing


async def test_a_connection_lost_mid_transaction_is_retried_with_backoff(pool: asyncpg.Pool) -> None:
    prefix = f"gc:{secrets.token_hex(4)}:"
    clock = FakeClock()
    attempts = 0

    async def commit(conn: asyncpg.Connection, items: list[str]) -> list[None]:
        nonlocal attempts
        attempts += 1
        await conn.execute(_INSERT, items, WINDOW)
        if attempts < 3:  # the server ends the session before the commit (as a restart would)
            await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        return [None] * len(items)

    batches: GroupCommit[str, None] = GroupCommit(
        pool, commit, name="test", retry_for_s=30, backoff=Backoff(0.1, 2.0, sleep=clock.sleep, clock=clock)
    )
    await asyncio.gather(*(batches.submit(f"{prefix}{i}") for i in range(4)))
    assert attempts == 3 and clock.slept == [0.1, 0.2]
    assert await written(pool, prefix) == [f"{prefix}{i}" for i in range(4)]  # once each


async def test_an_outage_that_outlasts_the_retries_surfaces_as_database_unavailable(pool: asyncpg.Pool) -> None:
    prefix = f"gc:{secrets.token_hex(4)}:"
    clock = FakeClock()

    async def commit(conn: asyncpg.Connection, items: list[str]) -> list[None]:
        await conn.execute(_INSERT, items, WINDOW)
        await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        return [None] * len(items)

    batches: GroupCommit[str, None] = GroupCommit(
        pool, commit, name="test", retry_for_s=5, backoff=Backoff(0.1, 2.0, sleep=clock.sleep, clock=clock)
    )
    failed = await asyncio.gather(*(batches.submit(f"{prefix}{i}") for i in range(3)), return_exceptions=True)
    assert all(isinstance(e, DatabaseUnavailable) for e in failed), failed
    assert clock.slept == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6])  # the next wait would pass 5 s
    assert await written(pool, prefix) == []


async def test_without_retries_an_outage_fails_at_once(pool: asyncpg.Pool) -> None:
    clock = FakeClock()

    async def commit(conn: asyncpg.Connection, items: list[str]) -> list[None]:
        await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        return [None] * len(items)

    batches: GroupCommit[str, None] = GroupCommit(
        pool, commit, name="test", backoff=Backoff(0.1, 2.0, sleep=clock.sleep, clock=clock)
    )
    with pytest.raises(DatabaseUnavailable):
        await batches.submit("x")
    assert clock.slept == []


async def test_a_caller_that_stops_waiting_is_dropped_or_handed_back(pool: asyncpg.Pool) -> None:
    prefix = f"gc:{secrets.token_hex(4)}:"
    seen: list[list[str]] = []
    abandoned: list[tuple[str, str]] = []

    async def commit(conn: asyncpg.Connection, items: list[str]) -> list[str]:
        seen.append(list(items))
        await conn.execute(_INSERT, items, WINDOW)
        await conn.execute("SELECT pg_sleep(0.1)")
        return [f"done {item}" for item in items]

    batches: GroupCommit[str, str] = GroupCommit(
        pool, commit, name="test", abandoned=lambda item, outcome: abandoned.append((item, outcome))
    )
    running = batches.submit(prefix + "running")
    await asyncio.sleep(0.03)  # its transaction is under way
    queued = batches.submit(prefix + "queued")
    kept = batches.submit(prefix + "kept")
    running.cancel()  # committed anyway: handed back to be undone
    queued.cancel()  # its batch has not started: dropped
    assert await kept == f"done {prefix}kept"
    await batches.flush()
    assert seen == [[prefix + "running"], [prefix + "kept"]]
    assert abandoned == [(prefix + "running", f"done {prefix}running")]
    assert await written(pool, prefix) == [prefix + "kept", prefix + "running"]


async def test_nobody_waits_for_a_pushed_item_and_flush_waits_for_it(pool: asyncpg.Pool) -> None:
    prefix = f"gc:{secrets.token_hex(4)}:"
    woken: list[int] = []

    async def commit(conn: asyncpg.Connection, items: list[str]) -> list[None]:
        woken.append(len(items))
        if items:
            await conn.execute(_INSERT, items, WINDOW)
        return [None] * len(items)

    batches: GroupCommit[str, None] = GroupCommit(pool, commit, name="test")
    batches.push(prefix + "a")
    batches.push(prefix + "b")
    await batches.flush()
    assert await written(pool, prefix) == [prefix + "a", prefix + "b"]
    batches.wake()  # a batch with no items (the commit has work of its own)
    await batches.flush()
    assert woken == [2, 0]


async def test_a_failing_hook_after_the_commit_leaves_no_caller_waiting(pool: asyncpg.Pool) -> None:
    async def commit(conn: asyncpg.Connection, items: list[int]) -> list[int]:
        return [await conn.fetchval("SELECT $1::int + 1", i) for i in items]

    def committed(items: list[int], outcomes: object) -> None:
        raise RuntimeError("a bug in a hook")

    batches: GroupCommit[int, int] = GroupCommit(pool, commit, name="test", committed=committed)
    assert await asyncio.wait_for(asyncio.gather(*(batches.submit(i) for i in range(3))), 10) == [1, 2, 3]
