"""The append-only ledger: accounts, trial grants, credits, and one charge per usage record.

Every write for a tenant first locks that tenant's `billing_accounts` row (FOR UPDATE, in tenant order), so
running balances are computed one writer at a time, across processes and hosts alike.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import distinct_on, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from billing.errors import InvalidBillingInput, UnknownAccount
from billing.models import BillingAccount, Invoice, LedgerEntry, Price
from billing.money import MICROS_PER_MINOR
from billing.rating import PriceVersion, choose_price, rate

ACCOUNTS = BillingAccount.__table__  # type: ignore[attr-defined]
LEDGER = LedgerEntry.__table__  # type: ignore[attr-defined]
PRICES = Price.__table__  # type: ignore[attr-defined]
INVOICES = Invoice.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class AccountDefaults:
    mode: str
    trial_tokens: int
    currency: str
    period: str = "month"  # the length of billing periods new charges are filed under: month | day


@dataclass(frozen=True)
class Balance:
    tenant_id: str
    mode: str
    currency: str
    credit_micros: int
    trial_remaining: int

    @property
    def credit_minor(self) -> int:
        """Whole minor units of credit (a partly used cent is not shown as spendable)."""
        return self.credit_micros // MICROS_PER_MINOR


_FORMATS = {"month": "%Y-%m", "day": "%Y-%m-%d"}


def period_of(at: datetime, unit: str = "month") -> str:
    """The billing period holding `at` (UTC): "2026-11" for months, "2026-11-25" for days."""
    return at.astimezone(UTC).strftime(_FORMATS[unit])


def period_unit(period: str) -> str:
    """A period id says its own length: YYYY-MM is a month, YYYY-MM-DD a day."""
    for unit, fmt in _FORMATS.items():
        try:
            datetime.strptime(period, fmt)
        except (TypeError, ValueError):
            continue
        return unit
    raise InvalidBillingInput("period must look like 2026-11 (a month) or 2026-11-25 (a day).", param="period")


def next_period(period: str) -> str:
    if period_unit(period) == "day":
        return (datetime.strptime(period, "%Y-%m-%d") + timedelta(days=1)).strftime("%Y-%m-%d")
    year, month = int(period[:4]), int(period[5:7])
    return f"{year + month // 12:04d}-{month % 12 + 1:02d}"


async def open_account(conn: AsyncConnection, tenant_id: str, mode: str, trial_tokens: int, currency: str) -> None:
    """Create the tenant's account and its trial grant (nothing if it already exists)."""
    if mode not in ("prepaid", "postpaid"):
        raise InvalidBillingInput("billing_mode must be 'prepaid' or 'postpaid'.", param="billing_mode")
    if trial_tokens < 0:
        raise InvalidBillingInput("trial_tokens must be ≥ 0.", param="trial_tokens")
    await _ensure_accounts(conn, [tenant_id], AccountDefaults(mode, trial_tokens, currency))


async def _ensure_accounts(conn: AsyncConnection, tenant_ids: list[str], d: AccountDefaults) -> None:
    """Accounts (with their trial grant) for tenants that have none yet: two statements, whatever the count."""
    now = datetime.now(UTC)
    created = await conn.execute(
        insert(ACCOUNTS)
        .values([{"tenant_id": t, "mode": d.mode, "currency": d.currency, "created_at": now} for t in tenant_ids])
        .on_conflict_do_nothing()
        .returning(ACCOUNTS.c.tenant_id)
    )
    grants = [
        {"tenant_id": t, "kind": "trial_grant", "occurred_at": now, "trial_delta": d.trial_tokens,
         "trial_after": d.trial_tokens, "balance_after_micros": 0, "note": "free trial", "created_at": now}
        for (t,) in created
    ]  # fmt: skip
    if grants:
        await conn.execute(sa.insert(LEDGER), grants)


async def _lock(conn: AsyncConnection, tenant_ids: list[str], defaults: AccountDefaults | None) -> dict[str, Any]:
    """Lock the accounts (creating missing ones with the defaults); tenant → account row."""
    if defaults is not None:
        await _ensure_accounts(conn, tenant_ids, defaults)
    rows = await conn.execute(
        sa.select(ACCOUNTS).where(ACCOUNTS.c.tenant_id.in_(tenant_ids)).order_by(ACCOUNTS.c.tenant_id).with_for_update()
    )
    return {r.tenant_id: r for r in rows}


async def _latest(conn: AsyncConnection, tenant_ids: list[str]) -> dict[str, tuple[int, int]]:
    """tenant → (credit balance in micros, trial tokens remaining), from each tenant's newest entry."""
    stmt = (
        sa.select(LEDGER.c.tenant_id, LEDGER.c.balance_after_micros, LEDGER.c.trial_after)
        .where(LEDGER.c.tenant_id.in_(tenant_ids))
        .order_by(LEDGER.c.tenant_id, LEDGER.c.id.desc())
        .ext(distinct_on(LEDGER.c.tenant_id))
    )
    return {r.tenant_id: (r.balance_after_micros, r.trial_after) for r in await conn.execute(stmt)}


async def price_book(conn: AsyncConnection, models: set[str] | None = None) -> dict[str, list[PriceVersion]]:
    stmt = sa.select(PRICES).order_by(PRICES.c.effective_from)
    if models is not None:
        stmt = stmt.where(PRICES.c.model.in_(models))
    book: dict[str, list[PriceVersion]] = defaultdict(list)
    for r in await conn.execute(stmt):
        book[r.model].append(PriceVersion(r.model, r.prompt_per_million, r.completion_per_million, r.effective_from))
    return book


async def charge_usage(conn: AsyncConnection, rows: list[dict[str, Any]], defaults: AccountDefaults) -> None:
    """One charge per usage row, in the caller's transaction (the one that inserts the usage rows).

    Each row needs: request_id, tenant_id, adapter_id, base_model, prompt_tokens, completion_tokens,
    started_at. The price is the one in force when the request started; a charge belongs to the month the
    request started in, or — if that month's invoice is already closed — to the next month still open.
    """
    if not rows:
        return
    tenant_ids = sorted({r["tenant_id"] for r in rows})
    await _lock(conn, tenant_ids, defaults)
    balances = await _latest(conn, tenant_ids)
    book = await price_book(conn, {m for r in rows for m in (r["adapter_id"], r["base_model"]) if m})
    closed = {
        (r.tenant_id, r.period)
        for r in await conn.execute(
            sa.select(INVOICES.c.tenant_id, INVOICES.c.period).where(INVOICES.c.tenant_id.in_(tenant_ids))
        )
    }
    entries = []
    now = datetime.now(UTC)
    for row in rows:
        tenant = row["tenant_id"]
        credit, trial = balances.get(tenant, (0, 0))
        price = choose_price(book, row["adapter_id"], row["base_model"], row["started_at"])
        charge = rate(row["prompt_tokens"], row["completion_tokens"], trial, price)
        credit, trial = credit - charge.amount_micros, trial - charge.trial_used
        balances[tenant] = (credit, trial)
        period = period_of(row["started_at"], defaults.period)
        while (tenant, period) in closed:
            period = next_period(period)
        entries.append(
            {
                "tenant_id": tenant, "kind": "charge", "occurred_at": row["started_at"], "period": period,
                "request_id": row["request_id"], "model": row["adapter_id"] or row["base_model"],
                "prompt_tokens": row["prompt_tokens"], "completion_tokens": row["completion_tokens"],
                "prompt_price": price.prompt_per_million, "completion_price": price.completion_per_million,
                "amount_micros": -charge.amount_micros, "trial_delta": -charge.trial_used,
                "balance_after_micros": credit, "trial_after": trial, "note": None, "idempotency_key": None,
                "created_at": now,
            }
        )  # fmt: skip
    await conn.execute(sa.insert(LEDGER), entries)


async def add_entry(
    conn: AsyncConnection,
    tenant_id: str,
    kind: str,
    amount_minor: int,
    note: str | None = None,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    """A credit (top-up) or payment; with an idempotency key, the same request twice is one entry."""
    if amount_minor <= 0:
        raise InvalidBillingInput("amount must be a positive integer in minor units.", param="amount")
    accounts = await _lock(conn, [tenant_id], None)
    if tenant_id not in accounts:
        raise UnknownAccount(f"No billing account for tenant {tenant_id!r}.")
    if idempotency_key:
        existing = (await conn.execute(sa.select(LEDGER).where(LEDGER.c.idempotency_key == idempotency_key))).first()
        if existing is not None:
            return dict(existing._mapping)
    credit, trial = (await _latest(conn, [tenant_id])).get(tenant_id, (0, 0))
    delta = amount_minor * MICROS_PER_MINOR if kind == "credit" else 0
    now = datetime.now(UTC)
    row = (
        await conn.execute(
            sa.insert(LEDGER)
            .values(
                tenant_id=tenant_id, kind=kind, occurred_at=now, amount_micros=delta,
                balance_after_micros=credit + delta, trial_after=trial, note=note,
                idempotency_key=idempotency_key, created_at=now,
            )
            .returning(*LEDGER.c)
        )
    ).one()  # fmt: skip
    return dict(row._mapping)


async def balance(conn: AsyncConnection, tenant_id: str) -> Balance:
    account = (await conn.execute(sa.select(ACCOUNTS).where(ACCOUNTS.c.tenant_id == tenant_id))).first()
    if account is None:
        raise UnknownAccount(f"No billing account for tenant {tenant_id!r}.")
    credit, trial = (await _latest(conn, [tenant_id])).get(tenant_id, (0, 0))
    return Balance(tenant_id, account.mode, account.currency, credit, trial)
