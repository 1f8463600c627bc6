"""Admission in-process against a real PostgreSQL: prepaid holds and trial reservations, concurrency limits,
group commit of admissions, and the release of what a request holds when it settles.

OpenRequests and UsageWriter are driven directly (no HTTP, no engine), on the tables a migrated database has.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from billing import ledger, prices
from billing.admission import Admission
from billing.errors import InsufficientQuota
from billing.ledger import AccountDefaults
from gateway import ids
from gateway.admission.limits import Grant, Limits
from gateway.admission.open_requests import Opening, OpenRequests
from gateway.db import create_pool
from gateway.errors import RateLimited
from gateway.settings import DatabaseSettings, to_asyncpg_url
from gateway.timeutil import utcnow
from gateway.usage.models import UsageStatus, usage_row
from gateway.usage.writer import UsageWriter

DEFAULTS = AccountDefaults("postpaid", 0, "usd")
ENDPOINT = "/v1/chat/completions"


@dataclass
class Tenant:
    id: str
    key: str
    model: str


@dataclass
class Metering:
    """One gateway process's admission and settlement, on a pool of its own."""

    pool: asyncpg.Pool
    opens: OpenRequests
    writer: UsageWriter
    sizes: list[int]
    abandoned: list[str]


@pytest.fixture
async def metering(database_url: str) -> AsyncIterator[Metering]:
    pool = await create_pool(DatabaseSettings(url=database_url))
    sizes: list[int] = []
    opens = OpenRequests(pool, Admission(DEFAULTS), "gw_" + secrets.token_hex(6), observe=lambda s, n: sizes.append(n))
    writer = UsageWriter(pool, on_commit=lambda conn, rows: ledger.charge_usage(conn, rows, DEFAULTS))
    writer.on_closed = opens.closed
    m = Metering(pool, opens, writer, sizes, [])
    opens.on_abandoned = lambda request_id, grant: m.abandoned.append(request_id)
    yield m
    await writer.stop()
    await pool.close()


async def seed(
    database_url: str,
    mode: str,
    trial: int = 0,
    credit_minor: int = 0,
    price: tuple[int, int] = (0, 0),
    concurrent: int | None = None,
) -> Tenant:
    """A tenant with one key, its billing account, and a model with its own price."""
    t = Tenant(ids.tenant_id(), ids.key_id(), "model-" + secrets.token_hex(4))
    db = create_async_engine(to_asyncpg_url(database_url))
    try:
        async with db.begin() as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO tenants (id, name, created_at, max_concurrent_requests) VALUES (:i, :i, now(), :c)"
                ),
                {"i": t.id, "c": concurrent},
            )
            await conn.execute(
                sa.text(
                    "INSERT INTO api_keys (id, tenant_id, name, prefix, key_hash, created_at) "
                    "VALUES (:i, :t, 'test', 'sk-test', :h, now())"
                ),
                {"i": t.key, "t": t.id, "h": secrets.token_hex(32)},
            )
            await ledger.open_account(conn, t.id, mode, trial, "usd")
            if credit_minor:
                await ledger.add_entry(conn, t.id, "credit", credit_minor)
            await prices.set_price(conn, t.model, *price, "usd", datetime.now(UTC) - timedelta(minutes=1))
    finally:
        await db.dispose()
    return t


def limits(t: Tenant, concurrent: int | None = None) -> tuple[Limits, ...]:
    return (Limits(f"t:{t.id}", concurrent=concurrent),) if concurrent else ()


async def admit(m: Metering, t: Tenant, worst_case: int, concurrent: int | None = None) -> tuple[str, Grant]:
    opening = Opening(ids.request_id(), t.id, t.key, t.model, t.model, None, ENDPOINT, False)
    _, grant = await m.opens.open(opening, limits(t, concurrent), worst_case)
    return opening.request_id, grant


async def settle(m: Metering, t: Tenant, request_id: str, prompt: int, completion: int) -> None:
    now = utcnow()
    await m.writer.record(
        usage_row(
            request_id=request_id, tenant_id=t.id, api_key_id=t.key, model=t.model, base_model=t.model,
            adapter_id=None, endpoint=ENDPOINT, stream=False, prompt_tokens=prompt, completion_tokens=completion,
            status=UsageStatus.OK, http_status=200, started_at=now, finished_at=now,
        )
    )  # fmt: skip


async def holds(m: Metering, t: Tenant) -> list[tuple[int, int]]:
    rows = await m.pool.fetch(
        "SELECT reserved_trial_tokens, reserved_micros FROM open_requests WHERE tenant_id = $1 ORDER BY started_at, "
        "reserved_trial_tokens DESC, reserved_micros",
        t.id,
    )
    return [(r[0], r[1]) for r in rows]


async def balance(m: Metering, t: Tenant) -> tuple[int, int]:
    row = await m.pool.fetchrow(
        "SELECT balance_after_micros, trial_after FROM ledger_entries WHERE tenant_id = $1 ORDER BY id DESC LIMIT 1",
        t.id,
    )
    assert row is not None
    return row[0], row[1]


async def test_trial_tokens_are_reserved_up_to_the_last_one_then_refused_until_one_settles(
    database_url: str, metering: Metering
) -> None:
    m = metering
    t = await seed(database_url, "prepaid", trial=100, price=(1000, 1000))  # 1,000 micros a token
    r1, _ = await admit(m, t, 40)
    r2, _ = await admit(m, t, 40)
    r3, _ = await admit(m, t, 40)  # the last 20 trial tokens, and 20 tokens' worth of credit it does not have
    assert await holds(m, t) == [(40, 0), (40, 0), (20, 20_000)]
    with pytest.raises(InsufficientQuota):  # no trial left, no credit
        await admit(m, t, 1)

    await settle(m, t, r1, 4, 6)  # used 10 of its 40: charged from the trial, its hold released
    assert await balance(m, t) == (0, 90)
    r4, _ = await admit(m, t, 40)  # 90 - (40 + 20) = 30 trial tokens free
    assert sorted(await holds(m, t)) == sorted([(40, 0), (20, 20_000), (30, 10_000)])
    with pytest.raises(InsufficientQuota):
        await admit(m, t, 1)

    await m.writer.discard(r2)  # never reached the engine: nothing charged, its 40 released
    await admit(m, t, 40)
    assert await balance(m, t) == (0, 90)
    assert sorted(await holds(m, t)) == sorted([(20, 20_000), (30, 10_000), (40, 0)])
    for r in (r3, r4):
        await settle(m, t, r, 0, 0)


async def test_prepaid_credit_admits_up_to_the_balance_exactly_and_refuses_the_next(
    database_url: str, metering: Metering
) -> None:
    m = metering
    # 3.00 of credit; 100 tokens at 10,000 minor units per million hold exactly 1.00 each.
    t = await seed(database_url, "prepaid", credit_minor=3, price=(10_000, 5_000))
    admitted = [await admit(m, t, 100) for _ in range(3)]
    assert await holds(m, t) == [(0, 1_000_000)] * 3
    with pytest.raises(InsufficientQuota):  # 3.00 - 3 × 1.00 = 0 left
        await admit(m, t, 100)

    await settle(m, t, admitted[0][0], 50, 20)  # 50 × 10,000 + 20 × 5,000 = 0.60 charged, its 1.00 released
    assert await balance(m, t) == (2_400_000, 0)
    await admit(m, t, 100)  # 2.40 - 2 × 1.00 = 0.40 free: admitted (a hold may go past what is left)
    with pytest.raises(InsufficientQuota):
        await admit(m, t, 100)


async def test_concurrent_admissions_share_commits_and_hold_exactly_the_balance(
    database_url: str, metering: Metering
) -> None:
    m = metering
    t = await seed(database_url, "prepaid", credit_minor=5, price=(10_000, 10_000))  # 5 holds of 1.00
    outcomes = await asyncio.gather(*(admit(m, t, 100) for _ in range(20)), return_exceptions=True)
    admitted = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(admitted) == 5 and all(isinstance(e, InsufficientQuota) for e in refused)
    assert sum(m.sizes) == 20 and len(m.sizes) < 20  # every request decided, in fewer commits than requests
    assert await holds(m, t) == [(0, 1_000_000)] * 5
    assert m.opens.live == {r for r, _ in admitted}
    await asyncio.gather(*(settle(m, t, r, 0, 0) for r, _ in admitted))
    assert await holds(m, t) == [] and m.opens.live == set()


async def test_a_concurrency_limit_admits_exactly_its_number_until_one_settles(
    database_url: str, metering: Metering
) -> None:
    m = metering
    t = await seed(database_url, "postpaid", concurrent=4)
    outcomes = await asyncio.gather(*(admit(m, t, 10, concurrent=4) for _ in range(12)), return_exceptions=True)
    admitted = [o[0] for o in outcomes if not isinstance(o, BaseException)]
    assert len(admitted) == 4
    assert all(isinstance(o, RateLimited) for o in outcomes if isinstance(o, BaseException))
    await settle(m, t, admitted[0], 1, 1)
    await m.writer.discard(admitted[1])
    again = await asyncio.gather(*(admit(m, t, 10, concurrent=4) for _ in range(3)), return_exceptions=True)
    assert sum(not isinstance(o, BaseException) for o in again) == 2


async def test_a_tenant_turned_prepaid_is_locked_and_held_at_once(database_url: str, metering: Metering) -> None:
    m = metering
    t = await seed(database_url, "postpaid", price=(1000, 1000))
    first, _ = await admit(m, t, 50)  # postpaid: remembered as such, admitted without its lock
    async with m.pool.acquire() as conn:
        await conn.execute("UPDATE billing_accounts SET mode = 'prepaid' WHERE tenant_id = $1", t.id)
    with pytest.raises(InsufficientQuota):  # read again under its lock: no trial, no credit
        await admit(m, t, 50)
    await settle(m, t, first, 1, 1)


async def test_an_admission_whose_caller_left_is_handed_back_or_never_written(
    database_url: str, metering: Metering
) -> None:
    m = metering
    t = await seed(database_url, "postpaid")

    async def opening() -> tuple[str, asyncio.Task[tuple[str, Grant]]]:
        request_id = ids.request_id()
        opening = Opening(request_id, t.id, t.key, t.model, t.model, None, ENDPOINT, False)
        return request_id, asyncio.create_task(m.opens.open(opening, (), 10))

    late, late_task = await opening()
    await asyncio.sleep(0)  # submitted
    await asyncio.sleep(0)  # taken: its transaction is under way
    assert not m.opens._batches._queue
    late_task.cancel()
    gone, gone_task = await opening()
    await asyncio.sleep(0)  # submitted, queued behind the batch under way
    gone_task.cancel()
    await m.opens._batches.flush()
    assert m.abandoned == [late]  # committed after its caller left: handed back to be closed
    rows = {
        r["request_id"] for r in await m.pool.fetch("SELECT request_id FROM open_requests WHERE tenant_id = $1", t.id)
    }
    assert rows == {late} and gone not in rows
    await m.writer.discard(late)
