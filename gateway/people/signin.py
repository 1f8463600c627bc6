"""Signing in: refuse while throttled, check the credentials, count and audit each failure, open a new session.
Knows nothing of HTTP; the dashboard (and the console) call it with what the form and the connection gave.

Failures count per account (the e-mail tried) and per client address. The admin token counts per address only:
it is at least 32 random characters, so nobody guesses it per account, and an account bound on it would let
anyone lock the first owner out.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.audit import service as audit
from gateway.audit.service import Actor
from gateway.people import service as people
from gateway.people import sessions, signup, throttle
from gateway.people.errors import (
    AccountDisabled,
    InvalidCredentials,
    SignInThrottled,
    TenantNotActive,
    WrongAccountKind,
)
from gateway.people.models import User
from gateway.people.sessions import ADMIN_TOKEN, SessionPolicy
from gateway.people.throttle import ThrottlePolicy


@dataclass(frozen=True, slots=True)
class SignInPolicy:
    sessions: SessionPolicy
    throttle: ThrottlePolicy


@dataclass(frozen=True, slots=True)
class SignedIn:
    token: str  # for the cookie only
    user: User | None  # None: the admin token


async def with_password(
    session: AsyncSession,
    policy: SignInPolicy,
    *,
    email: str,
    password: str,
    ip: str | None,
    operator: bool,
    replacing: str | None = None,
) -> SignedIn:
    """Sign a user in (an operator if `operator`, else a tenant user); `replacing` is the session token the
    browser already had, which ends."""
    account = email.strip().lower()[:254] or "(no e-mail)"
    await _unless_throttled(session, policy, account=account, ip=ip)
    try:
        user = await people.authenticate(session, email, password)
    except InvalidCredentials:
        await _failed(session, account, ip, "password")
        raise
    except AccountDisabled:
        await _audit(session, account, "signin.refused", {"reason": "disabled"}, ip)
        raise
    if user.is_operator != operator:
        where = "the admin dashboard (/admin)" if user.is_operator else "the console (/console)"
        raise WrongAccountKind(f"This account signs in on {where}.")
    if user.tenant_id is not None:
        try:  # a pending, rejected or suspended tenant's users are told why, and get no session
            await signup.check_tenant_active(session, user.tenant_id)
        except TenantNotActive as exc:
            await _audit(session, account, "signin.refused", {"reason": "tenant_not_active", "why": exc.message}, ip)
            raise
    await throttle.clear_account(session, account)
    return await _open(session, policy, user=user, ip=ip, replacing=replacing)


async def with_admin_token(
    session: AsyncSession,
    policy: SignInPolicy,
    *,
    candidate: str,
    expected: str | None,
    ip: str | None,
    replacing: str | None = None,
) -> SignedIn:
    """Sign the admin token's holder in as an operator owner."""
    if expected is None:
        raise InvalidCredentials("Sign-in with the admin token is disabled: set GATEWAY_ADMIN_TOKEN.")
    await _unless_throttled(session, policy, account=None, ip=ip)
    if not candidate or not hmac.compare_digest(candidate.encode(), expected.encode()):
        await _failed(session, ADMIN_TOKEN, ip, "admin-token")
        raise InvalidCredentials("That admin token is wrong.")
    return await _open(session, policy, admin_token=expected, ip=ip, replacing=replacing)


async def sign_out(session: AsyncSession, token: str) -> None:
    await sessions.end(session, token)
    await session.commit()


async def _open(
    session: AsyncSession,
    policy: SignInPolicy,
    *,
    user: User | None = None,
    admin_token: str | None = None,
    ip: str | None,
    replacing: str | None,
) -> SignedIn:
    if replacing:
        await sessions.end(session, replacing)
    token = await sessions.start(session, policy.sessions, user=user, admin_token=admin_token, ip=ip)
    actor = "admin" if user is None else f"{'operator' if user.is_operator else 'user'}:{user.email}"
    await _audit(session, actor, "signin", None, ip)  # the new session and its audit row commit together
    return SignedIn(token, user)


async def _unless_throttled(
    session: AsyncSession, policy: SignInPolicy, *, account: str | None, ip: str | None
) -> None:
    try:
        await throttle.check(session, policy.throttle, account=account, ip=ip)
    except SignInThrottled as exc:
        await _audit(session, account or ADMIN_TOKEN, "signin.throttled", {"retry_after_s": exc.retry_after_s}, ip)
        raise


async def _failed(session: AsyncSession, account: str, ip: str | None, via: str) -> None:
    await session.rollback()  # nothing of the attempt but its failure is kept
    await throttle.record_failure(session, account=account, ip=ip)
    await _audit(session, account, "signin.failed", {"via": via}, ip)  # with the failure it counts


async def _audit(session: AsyncSession, actor: str, action: str, detail: dict[str, Any] | None, ip: str | None) -> None:
    """The attempt's audit row, committed with whatever the session holds of it (a new session, a failure)."""
    await audit.record(await session.connection(), Actor(actor, ip), action, None, detail)
    await session.commit()
