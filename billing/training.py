"""Training is billed per trained token at the base model's `training_per_million`; a prepaid job holds its
estimated cost from creation until it ends, then is charged exactly what it trained (one ledger entry per job,
keyed by the job id, so a retried or resumed job is never charged twice)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from billing.errors import InsufficientQuota
from billing.ledger import LATEST, LEDGER, AccountDefaults, lock_accounts, next_period, period_of
from billing.models import Price
from billing.money import MICROS_PER_MINOR
from billing.sql import Alchemy

PRICES = Price.__table__  # type: ignore[attr-defined]
LINE_SUFFIX = " (training)"  # training is its own usage and invoice line: "<base model> (training)"


@dataclass(frozen=True)
class Hold:
    tokens: int = 0  # trial tokens
    micros: int = 0  # credit, micro-minor units


async def training_price(conn: AsyncConnection, model: str, at: datetime) -> int:
    """Minor units per 1M trained tokens in force at `at` (0 if the model has no price)."""
    stmt = (
        sa.select(PRICES.c.training_per_million)
        .where(PRICES.c.model == model, PRICES.c.effective_from <= at)
        .order_by(PRICES.c.effective_from.desc())
        .limit(1)
    )
    return int((await conn.execute(stmt)).scalar() or 0)


async def _state(conn: AsyncConnection, tenant_id: str, defaults: AccountDefaults) -> tuple[str, int, int]:
    """Lock the tenant's account (creating it if needed); (mode, credit micros, trial tokens)."""
    q = Alchemy(conn)
    await lock_accounts(q, [tenant_id], defaults)
    mode = (
        await conn.execute(sa.text("SELECT mode FROM billing_accounts WHERE tenant_id = :t"), {"t": tenant_id})
    ).scalar_one()
    latest = await q.fetch(LATEST, [tenant_id])
    credit, trial = (int(latest[0]["balance_after_micros"]), int(latest[0]["trial_after"])) if latest else (0, 0)
    return str(mode), credit, trial


async def hold(
    conn: AsyncConnection,
    tenant_id: str,
    model: str,
    tokens: int,
    defaults: AccountDefaults,
    *,
    trial_covers: bool,
    held: Hold = Hold(),
) -> Hold:
    """What a new job of `tokens` holds, or InsufficientQuota. `held` is what the tenant's other unfinished
    jobs hold; the caller reads it in this transaction, after this call has locked the account."""
    mode, credit, trial = await _state(conn, tenant_id, defaults)
    if mode != "prepaid":
        return Hold()
    price = await training_price(conn, model, datetime.now(UTC))
    from_trial = min(max(trial - held.tokens, 0), tokens) if trial_covers else 0
    cost = (tokens - from_trial) * price
    free = credit - held.micros
    if cost > 0 and cost > free:
        raise InsufficientQuota(
            f"You exceeded your current quota: this fine-tuning job is estimated at {tokens} trained tokens "
            f"({cost / MICROS_PER_MINOR:.2f} {defaults.currency}), more than your available prepaid credit "
            f"({max(free, 0) / MICROS_PER_MINOR:.2f} {defaults.currency})."
            + ("" if trial_covers else " Free trial tokens do not cover training."),
            param="training_file",
        )
    return Hold(from_trial, cost)


async def charge(
    conn: AsyncConnection,
    tenant_id: str,
    job_id: str,
    model: str,
    tokens: int,
    at: datetime,
    defaults: AccountDefaults,
    *,
    trial_covers: bool,
) -> None:
    """Charge `tokens` trained tokens of `job_id`, once: a second call for the same job does nothing."""
    _, credit, trial = await _state(conn, tenant_id, defaults)
    if tokens <= 0:
        return
    done = await conn.execute(sa.select(LEDGER.c.id).where(LEDGER.c.request_id == job_id))
    if done.first() is not None:
        return
    price = await training_price(conn, model, at)
    trial_used = min(max(trial, 0), tokens) if trial_covers else 0
    amount = (tokens - trial_used) * price
    period = period_of(at, defaults.period)
    closed = {
        p
        for (p,) in await conn.execute(
            sa.text("SELECT period FROM invoices WHERE tenant_id = :t AND period >= :p"), {"t": tenant_id, "p": period}
        )
    }
    while period in closed:
        period = next_period(period)
    await conn.execute(
        sa.insert(LEDGER).values(
            tenant_id=tenant_id,
            kind="charge",
            occurred_at=at,
            period=period,
            request_id=job_id,
            model=model + LINE_SUFFIX,
            prompt_tokens=tokens,
            completion_tokens=0,
            prompt_price=price,
            completion_price=0,
            amount_micros=-amount,
            trial_delta=-trial_used,
            balance_after_micros=credit - amount,
            trial_after=trial - trial_used,
            note=f"fine-tuning job {job_id}: {tokens} trained tokens",
            created_at=datetime.now(UTC),
        )
    )
