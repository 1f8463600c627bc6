"""Server-side browser sessions in PostgreSQL: start, resolve on every request, end. Knows nothing of HTTP.

The browser holds a random 256-bit token; the table holds its SHA-256, so a copy of the table opens nothing.
A session is over when it is revoked (sign-out, a new password, the user disabled), when it has not been used
for `idle`, when `lifetime` has passed since sign-in, or — for one opened with the admin token — when that token
has changed. last_seen_at is written at most once per `touch_every`, not on every request.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.people.models import User, WebSession
from gateway.timeutil import utcnow

ADMIN_TOKEN = "admin-token"
_KEEP_ENDED = timedelta(days=1)  # ended sessions are deleted a day later, when someone signs in


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    idle: timedelta
    lifetime: timedelta
    touch_every: timedelta = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a live session belongs to: a user, or whoever holds the admin token (an operator owner)."""

    session_id: str  # the stored hash, never the cookie's token
    user_id: str | None
    email: str | None
    name: str
    role: str
    tenant_id: str | None
    flash: str | None = None

    @property
    def is_operator(self) -> bool:
        return self.tenant_id is None

    @property
    def actor(self) -> str:
        """How the audit log names it: 'admin' for the admin token (as the admin API), else the user's e-mail."""
        if self.user_id is None:
            return "admin"
        return f"{'operator' if self.is_operator else 'user'}:{self.email}"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def admin_token_hash(admin_token: str) -> str:
    """Which admin token opened a session, without storing the token."""
    return hashlib.sha256(b"admin-token session\0" + admin_token.encode()).hexdigest()


async def start(
    session: AsyncSession,
    policy: SessionPolicy,
    *,
    user: User | None = None,
    admin_token: str | None = None,
    ip: str | None = None,
    flash: str | None = None,
    now: datetime | None = None,
) -> str:
    """A new session for the user (or the admin token's holder); returns the token for the cookie, which is
    nowhere else. Always a new id: a token the browser had before sign-in is never promoted (fixation)."""
    if (user is None) == (admin_token is None):
        raise ValueError("a session belongs to a user or to the admin token")
    now = now or utcnow()
    await session.exec(sa.delete(WebSession).where(col(WebSession.expires_at) < now - _KEEP_ENDED))
    token = secrets.token_urlsafe(32)
    session.add(
        WebSession(
            id=hash_token(token),
            principal="user" if user is not None else ADMIN_TOKEN,
            user_id=user.id if user is not None else None,
            admin_token_hash=admin_token_hash(admin_token) if admin_token is not None else None,
            created_at=now,
            last_seen_at=now,
            expires_at=now + policy.lifetime,
            ip=ip,
            flash=flash,
        )
    )
    return token


async def resolve(
    session: AsyncSession,
    token: str,
    policy: SessionPolicy,
    *,
    admin_token: str | None,
    take_flash: bool = False,
    now: datetime | None = None,
) -> Principal | None:
    """The live session of this token, or None. Touches last_seen_at when it is older than touch_every; with
    take_flash, hands out the pending flash message and clears it. Commits what it wrote."""
    if not token:
        return None
    now = now or utcnow()
    stmt = (
        select(WebSession, User)
        .join(User, col(User.id) == WebSession.user_id, isouter=True)
        .where(
            WebSession.id == hash_token(token),
            col(WebSession.revoked_at).is_(None),
            WebSession.expires_at > now,
            WebSession.last_seen_at > now - policy.idle,
        )
    )
    row = (await session.exec(stmt)).first()
    if row is None:
        return None
    ws, user = row
    if user is None:
        if admin_token is None or ws.admin_token_hash != admin_token_hash(admin_token):
            return None  # the admin token was changed (or unset) since this sign-in
        principal = Principal(ws.id, None, None, "admin token", "owner", None, ws.flash if take_flash else None)
    else:
        if user.disabled_at is not None:
            return None
        principal = Principal(
            ws.id, user.id, user.email, user.name, user.role, user.tenant_id, ws.flash if take_flash else None
        )
    changes: dict[str, object] = {}
    if now - ws.last_seen_at >= policy.touch_every:
        changes["last_seen_at"] = now
    if take_flash and ws.flash is not None:
        changes["flash"] = None
    if changes:
        await session.exec(sa.update(WebSession).where(col(WebSession.id) == ws.id).values(**changes))
        await session.commit()
    return principal


async def set_flash(session: AsyncSession, session_id: str, message: str) -> None:
    """A message for the next page this session is shown."""
    stmt = sa.update(WebSession).where(col(WebSession.id) == session_id).values(flash=message[:500])
    await session.exec(stmt)


async def end(session: AsyncSession, token: str, now: datetime | None = None) -> None:
    """Sign-out: this token's session is over (nothing happens for an unknown token)."""
    stmt = (
        sa.update(WebSession)
        .where(col(WebSession.id) == hash_token(token), col(WebSession.revoked_at).is_(None))
        .values(revoked_at=now or utcnow())
    )
    await session.exec(stmt)


async def end_all(session: AsyncSession, user_id: str, now: datetime | None = None) -> None:
    """Every session of the user is over."""
    stmt = (
        sa.update(WebSession)
        .where(col(WebSession.user_id) == user_id, col(WebSession.revoked_at).is_(None))
        .values(revoked_at=now or utcnow())
    )
    await session.exec(stmt)
