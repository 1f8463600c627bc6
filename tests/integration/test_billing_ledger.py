"""The ledger and invoices against real PostgreSQL: exact to the micro, once and only once."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import create_async_engine

from billing import invoices, ledger, prices
from billing.ledger import AccountDefaults
from billing.money import round_half_up
from billing.sql import Alchemy
from gateway.settings import to_asyncpg_url

MONTH = datetime(2025, 3, 1, tzinfo=UTC)
DEFAULTS = AccountDefaults("prepaid", 0, "usd")

usage = st.tuples(st.integers(0, 31 * 86400 - 1), st.integers(0, 5000), st.integers(0, 5000))
price_change = st.tuples(st.integers(-86400, 31 * 86400), st.integers(0, 10**6), st.integers(0, 10**6))


def expected(rows: list[tuple[int, int, int]], changes: list[tuple[int, int, int]], trial: int) -> tuple[int, int]:
    """Independent re-computation: (total micros, trial tokens used)."""
    versions = sorted(changes)
    total, used = 0, 0
    for at, p, c in rows:
        in_force = [v for v in versions if v[0] <= at]
        pp, cp = (in_force[-1][1], in_force[-1][2]) if in_force else (0, 0)
        from_trial = min(trial - used, p + c)
        used += from_trial
        prompt_free = min(from_trial, p)
        total += (p - prompt_free) * pp + (c - (from_trial - prompt_free)) * cp
    return total, used


async def scenario(
    url: str, rows: list[tuple[int, int, int]], changes: list[tuple[int, int, int]], trial: int, cut: int
) -> dict[str, Any]:
    db = create_async_engine(to_asyncpg_url(url))
    tenant, model = "tnt_h" + secrets.token_hex(6), "base-" + secrets.token_hex(4)
    try:
        async with db.begin() as conn:
            await conn.execute(
                sa.text("INSERT INTO tenants (id, name, created_at) VALUES (:i, :i, now())"), {"i": tenant}
            )
            await ledger.open_account(conn, tenant, "prepaid", trial, "usd")
            for at, p, c in {v[0]: v for v in changes}.values():
                await prices.set_price(conn, model, p, c, "usd", MONTH + timedelta(seconds=at))
        usage_rows = [
            {"request_id": "req_" + secrets.token_hex(10), "tenant_id": tenant, "adapter_id": None, "base_model": model,
             "prompt_tokens": p, "completion_tokens": c, "started_at": MONTH + timedelta(seconds=at)}
            for at, p, c in rows
        ]  # fmt: skip
        for batch in (usage_rows[:cut], usage_rows[cut:]):  # two group commits
            async with db.begin() as conn:
                await ledger.charge_usage(Alchemy(conn), batch, DEFAULTS)
        async with db.begin() as conn:
            first = [i for i in await invoices.close_period(conn, "2025-03") if i["tenant_id"] == tenant]
        async with db.begin() as conn:
            second = [i for i in await invoices.close_period(conn, "2025-03") if i["tenant_id"] == tenant]
        async with db.connect() as conn:
            bal = await ledger.balance(conn, tenant)
        return {"first": first, "second": second, "balance": bal}
    finally:
        await db.dispose()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(usage, min_size=1, max_size=25),
    changes=st.lists(price_change, max_size=4, unique_by=lambda c: c[0]),
    trial=st.integers(0, 20000),
    data=st.data(),
)
def test_invoice_equals_independent_sum_of_charges(
    database_url: str, rows: Any, changes: Any, trial: int, data: Any
) -> None:
    cut = data.draw(st.integers(0, len(rows)))
    out = asyncio.run(scenario(database_url, rows, changes, trial, cut))
    total, used = expected(rows, changes, trial)
    [invoice] = out["first"]
    assert out["second"] == out["first"]  # closing twice: the same invoice
    assert invoice["total_micros"] == total == sum(line["amount_micros"] for line in invoice["lines"])
    assert invoice["total_minor"] == round_half_up(total) == sum(line["amount_minor"] for line in invoice["lines"])
    assert invoice["prompt_tokens"] == sum(r[1] for r in rows)
    assert invoice["completion_tokens"] == sum(r[2] for r in rows)
    assert sum(line["requests"] for line in invoice["lines"]) == len(rows)
    assert out["balance"].credit_micros == -total and out["balance"].trial_remaining == trial - used


def test_late_charge_after_close_goes_to_the_next_open_period(database_url: str) -> None:
    async def run() -> tuple[list[str], list[dict[str, Any]]]:
        db = create_async_engine(to_asyncpg_url(database_url))
        tenant = "tnt_l" + secrets.token_hex(6)
        row = {"tenant_id": tenant, "adapter_id": None, "base_model": "m", "prompt_tokens": 3, "completion_tokens": 4,
               "started_at": datetime(2025, 5, 31, 23, 59, 59, tzinfo=UTC)}  # fmt: skip
        try:
            async with db.begin() as conn:
                await conn.execute(
                    sa.text("INSERT INTO tenants (id, name, created_at) VALUES (:i, :i, now())"), {"i": tenant}
                )
                await ledger.charge_usage(
                    Alchemy(conn), [{**row, "request_id": "req_" + secrets.token_hex(8)}], DEFAULTS
                )
                await invoices.close_period(conn, "2025-05")
                # a request that started in May but was rated after May's invoice was closed
                await ledger.charge_usage(
                    Alchemy(conn), [{**row, "request_id": "req_" + secrets.token_hex(8)}], DEFAULTS
                )
                periods = (await conn.execute(
                    sa.text("SELECT period FROM ledger_entries WHERE tenant_id = :t AND kind = 'charge' ORDER BY id"),
                    {"t": tenant},
                )).scalars().all()  # fmt: skip
                return list(periods), await invoices.list_invoices(conn, tenant)
        finally:
            await db.dispose()

    periods, listed = asyncio.run(run())
    assert periods == ["2025-05", "2025-06"]
    assert [i["period"] for i in listed] == ["2025-05"] and listed[0]["completion_tokens"] == 4


def test_bad_period_and_price_inputs_are_refused(database_url: str) -> None:
    from billing.errors import InvalidBillingInput

    with pytest.raises(InvalidBillingInput):
        invoices.check_period("2025-13")
    with pytest.raises(InvalidBillingInput):
        invoices.check_period("March")

    async def bad_price() -> None:
        db = create_async_engine(to_asyncpg_url(database_url))
        try:
            async with db.begin() as conn:
                await prices.set_price(conn, "m", -1, 0, "usd")
        finally:
            await db.dispose()

    with pytest.raises(InvalidBillingInput):
        asyncio.run(bad_price())


def test_daily_periods(database_url: str) -> None:
    """BILLING_PERIOD=day: charges are filed under YYYY-MM-DD and each day closes into its own invoice."""
    daily = AccountDefaults("postpaid", 0, "usd", period="day")

    async def run() -> list[dict[str, Any]]:
        db = create_async_engine(to_asyncpg_url(database_url))
        tenant = "tnt_d" + secrets.token_hex(6)
        rows = [
            {"request_id": "req_" + secrets.token_hex(8), "tenant_id": tenant, "adapter_id": None, "base_model": "m",
             "prompt_tokens": 1, "completion_tokens": n, "started_at": datetime(2025, 7, day, 12, tzinfo=UTC)}
            for n, day in ((2, 30), (3, 31), (4, 31))
        ]  # fmt: skip
        try:
            async with db.begin() as conn:
                await conn.execute(
                    sa.text("INSERT INTO tenants (id, name, created_at) VALUES (:i, :i, now())"), {"i": tenant}
                )
                await ledger.charge_usage(Alchemy(conn), rows, daily)
                await invoices.close_period(conn, "2025-07-31")
                # rated after 07-31 closed: goes to the next open day
                late = {**rows[0], "request_id": "req_" + secrets.token_hex(8), "started_at": rows[1]["started_at"]}
                await ledger.charge_usage(Alchemy(conn), [late], daily)
                await invoices.close_period(conn, "2025-07-30")
                await invoices.close_period(conn, "2025-08-01")
                return await invoices.list_invoices(conn, tenant)
        finally:
            await db.dispose()

    listed = {i["period"]: i["completion_tokens"] for i in asyncio.run(run())}
    assert listed == {"2025-07-30": 2, "2025-07-31": 7, "2025-08-01": 2}
    assert ledger.next_period("2025-12-31") == "2026-01-01" and ledger.next_period("2025-12") == "2026-01"
