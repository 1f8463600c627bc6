"""Failed sign-ins, kept in PostgreSQL so the count holds across processes: past a bound per account or per
client address within a window, sign-ins are refused until the oldest counted failure leaves the window."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.people.errors import SignInThrottled
from gateway.people.models import SignInFailure
from gateway.timeutil import utcnow

_KEEP = timedelta(days=1)  # failures older than this are deleted as new ones come


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    per_account: int
    per_address: int
    window: timedelta


async def check(
    session: AsyncSession,
    policy: ThrottlePolicy,
    *,
    account: str | None,
    ip: str | None,
    now: datetime | None = None,
) -> None:
    """SignInThrottled (with the seconds to wait) if the account or the address has failed too often lately."""
    now = now or utcnow()
    waits = [
        await _wait(session, column, value, limit, policy.window, now)
        for column, value, limit in (
            (SignInFailure.account, account, policy.per_account),
            (SignInFailure.ip, ip, policy.per_address),
        )
        if value is not None
    ]
    longest = max(waits, default=0.0)
    if longest > 0:
        raise SignInThrottled(longest)


async def _wait(
    session: AsyncSession, column: object, value: str, limit: int, window: timedelta, now: datetime
) -> float:
    """Seconds until fewer than `limit` failures of this account/address are in the window (0: already)."""
    limit_th = (
        select(SignInFailure.at)
        .where(col(column) == value, SignInFailure.at > now - window)
        .order_by(col(SignInFailure.at).desc())
        .offset(limit - 1)
        .limit(1)
    )
    at = (await session.exec(limit_th)).first()
    return 0.0 if at is None else max((at + window - now).total_seconds(), 0.0)


async def record_failure(
    session: AsyncSession, *, account: str | None, ip: str | None, now: datetime | None = None
) -> None:
    now = now or utcnow()
    await session.exec(sa.delete(SignInFailure).where(col(SignInFailure.at) < now - _KEEP))
    session.add(SignInFailure(at=now, account=account[:254] if account else None, ip=ip))


async def clear_account(session: AsyncSession, account: str) -> None:
    """A successful sign-in forgets the account's failures (not the address's: one good account must not let
    an address keep guessing others)."""
    await session.exec(sa.delete(SignInFailure).where(col(SignInFailure.account) == account))
