"""The bill of a fine-tuning job: what it holds while it runs, what it is charged when it ends."""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel.ext.asyncio.session import AsyncSession

from billing import training
from billing.ledger import AccountDefaults, lock_accounts
from billing.settings import BillingSettings
from billing.sql import Alchemy
from gateway.fine_tuning.models import FINAL, FineTuningJob
from gateway.timeutil import utcnow

_JOBS = FineTuningJob.__table__  # type: ignore[attr-defined]


def defaults(b: BillingSettings) -> AccountDefaults:
    return AccountDefaults(mode=b.default_mode, trial_tokens=b.trial_tokens, currency=b.currency, period=b.period)


async def hold(session: AsyncSession, job: FineTuningJob, settings: BillingSettings) -> None:
    """Hold the job's estimated cost (prepaid tenants), or raise InsufficientQuota (429); in the session's
    transaction, with the tenant's account locked, so concurrent creates cannot overspend."""
    conn = await session.connection()
    await lock_accounts(Alchemy(conn), [job.tenant_id], defaults(settings))
    held = (
        await conn.execute(
            sa.select(
                sa.func.coalesce(sa.func.sum(_JOBS.c.hold_tokens), 0),
                sa.func.coalesce(sa.func.sum(_JOBS.c.hold_micros), 0),
            ).where(_JOBS.c.tenant_id == job.tenant_id, _JOBS.c.charged.is_(False), _JOBS.c.status.not_in(list(FINAL)))
        )
    ).one()
    got = await training.hold(
        conn,
        job.tenant_id,
        job.model,
        job.estimated_tokens,
        defaults(settings),
        trial_covers=settings.trial_covers_training,
        held=training.Hold(int(held[0]), int(held[1])),
    )
    job.hold_tokens, job.hold_micros = got.tokens, got.micros
    job.trial_covers = settings.trial_covers_training  # the charge follows the terms the job was created under


async def settle(session: AsyncSession, job: FineTuningJob, trained_tokens: int, settings: BillingSettings) -> None:
    """Charge exactly `trained_tokens` and release the hold, in the caller's transaction (once per job)."""
    if job.charged:
        return
    conn = await session.connection()
    await training.charge(
        conn,
        job.tenant_id,
        job.id,
        job.model,
        trained_tokens,
        utcnow(),
        defaults(settings),
        trial_covers=job.trial_covers,
    )
    job.trained_tokens = trained_tokens
    job.charged = True
    job.hold_micros = job.hold_tokens = 0
