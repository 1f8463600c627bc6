"""Users: create, authenticate, change or reset a password, disable. Knows nothing of HTTP.

Every function works inside the caller's transaction and leaves the commit to it, so a change and its audit row
can commit together. Whatever ends a user's right to a session (a new password, disabling) ends its sessions
in the same transaction.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway import ids
from gateway.audit import service as audit
from gateway.audit.service import Actor
from gateway.auth.models import Tenant
from gateway.db import transaction
from gateway.errors import InvalidRequest, NotFound
from gateway.people import passwords, sessions
from gateway.people.errors import AccountDisabled, EmailTaken, InvalidCredentials, InvalidEmail
from gateway.people.models import OperatorRole, TenantRole, User
from gateway.timeutil import utcnow

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
MAX_EMAIL = 254


def normalize_email(email: str) -> str:
    """Trimmed and lower-case; InvalidEmail unless it looks like an address."""
    email = email.strip().lower()
    if len(email) > MAX_EMAIL or not _EMAIL.fullmatch(email):
        raise InvalidEmail("Enter a valid e-mail address.", param="email")
    return email


async def create_operator(session: AsyncSession, *, email: str, name: str, password: str, role: str) -> User:
    """A new operator user (owner, billing or viewer)."""
    return await _create(
        session, email=email, name=name, password=password, role=_role(OperatorRole, role), tenant=None
    )


async def create_tenant_user(
    session: AsyncSession, *, tenant_id: str, email: str, name: str, password: str, role: str | None = None
) -> User:
    """A new user of a tenant: its owner if it is the first, else a member (unless `role` says otherwise)."""
    tenant = (await session.exec(select(Tenant).where(Tenant.id == tenant_id).with_for_update())).first()
    if tenant is None:
        raise NotFound(f"No tenant {tenant_id!r}.", param="tenant_id")
    if role is None:  # the tenant row is locked: two first sign-ups cannot both become owner
        has_users = (await session.exec(select(User.id).where(User.tenant_id == tenant_id).limit(1))).first()
        role = TenantRole.MEMBER if has_users else TenantRole.OWNER
    return await _create(
        session, email=email, name=name, password=password, role=_role(TenantRole, role), tenant=tenant_id
    )


def _role(kind: type[OperatorRole] | type[TenantRole], role: str) -> str:
    try:
        return kind(role).value
    except ValueError:
        raise InvalidRequest(
            f"Unknown role {role!r}: one of {', '.join(r.value for r in kind)}.", param="role"
        ) from None


async def _create(
    session: AsyncSession, *, email: str, name: str, password: str, role: str, tenant: str | None
) -> User:
    email = normalize_email(email)
    name = name.strip()
    if not name:
        raise InvalidRequest("Enter a name.", param="name")
    passwords.check_policy(password)
    if await find_by_email(session, email) is not None:
        raise EmailTaken(f"There is already an account for {email}.", param="email")
    user = User(
        id=ids.new_id("usr_"),
        email=email,
        name=name[:200],
        password_hash=await passwords.hash_password(password),
        tenant_id=tenant,
        role=str(role),
    )
    session.add(user)
    try:
        await session.flush()
    except IntegrityError as exc:  # taken meanwhile by a concurrent sign-up
        raise EmailTaken(f"There is already an account for {email}.", param="email") from exc
    return user


async def find_by_email(session: AsyncSession, email: str) -> User | None:
    """The user with this e-mail (any case), or None."""
    stmt = select(User).where(sa.func.lower(User.email) == email.strip().lower())
    return (await session.exec(stmt)).first()


async def get(session: AsyncSession, user_id: str) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound(f"No user {user_id!r}.", param="user_id")
    return user


async def list_operators(session: AsyncSession) -> Sequence[User]:
    stmt = select(User).where(col(User.tenant_id).is_(None)).order_by(col(User.created_at))
    return (await session.exec(stmt)).all()


async def authenticate(session: AsyncSession, email: str, password: str) -> User:
    """The user with this e-mail and password; InvalidCredentials (the same for an unknown e-mail and a wrong
    password), or AccountDisabled once the password was right."""
    try:
        user = await find_by_email(session, normalize_email(email))
    except InvalidEmail:
        user = None
    if not await passwords.verify(user.password_hash if user else None, password) or user is None:
        raise InvalidCredentials("Wrong e-mail or password.")
    if user.disabled_at is not None:
        raise AccountDisabled("This account is disabled. Ask an operator to enable it.")
    if passwords.needs_rehash(user.password_hash):
        user.password_hash = await passwords.hash_password(password)
        session.add(user)
    return user


async def change_password(session: AsyncSession, user_id: str, current: str, new: str) -> User:
    """The user's own change: the current password must be right. Ends every session of the user (the caller
    starts a new one for the browser that asked)."""
    user = await get(session, user_id)
    if not await passwords.verify(user.password_hash, current):
        raise InvalidCredentials("The current password is wrong.", param="current_password")
    return await _set_password(session, user, new)


async def reset_password(session: AsyncSession, user_id: str, new: str) -> User:
    """An operator sets a user's password; every session of the user ends."""
    return await _set_password(session, await get(session, user_id), new)


async def tenant_users(session: AsyncSession, tenant_id: str) -> list[User]:
    """A tenant's users, oldest (its owner) first; NotFound for an unknown tenant."""
    if await session.get(Tenant, tenant_id) is None:
        raise NotFound(f"No tenant {tenant_id!r}.", param="tenant_id")
    rows = await session.exec(select(User).where(User.tenant_id == tenant_id).order_by(col(User.created_at)))
    return list(rows.all())


def user_json(user: User) -> dict[str, Any]:
    return {"object": "user", "id": user.id, "email": user.email, "name": user.name, "role": user.role,
            "tenant_id": user.tenant_id, "created_at": user.created_at, "disabled_at": user.disabled_at}  # fmt: skip


async def reset_tenant_user_password(
    session: AsyncSession, actor: Actor, tenant_id: str, user_id: str
) -> tuple[User, str]:
    """An operator gives a tenant's user a new random password (returned once); its sessions end; audited in the
    same transaction. Another tenant's user is NotFound, like a missing one."""
    user = await session.get(User, user_id)
    if user is None or user.tenant_id != tenant_id:
        raise NotFound(f"No user {user_id!r} in tenant {tenant_id!r}.", param="user_id")
    password = secrets.token_urlsafe(15)  # 20 characters
    async with transaction(session):
        await _set_password(session, user, password)
        await audit.record(await session.connection(), actor, "user.password_reset", user.id, {"email": user.email})
    return user, password


async def _set_password(session: AsyncSession, user: User, new: str) -> User:
    passwords.check_policy(new)
    user.password_hash = await passwords.hash_password(new)
    session.add(user)
    await sessions.end_all(session, user.id)
    return user


async def disable(session: AsyncSession, user_id: str, at: datetime | None = None) -> User:
    """The user can no longer sign in; its sessions end now."""
    user = await get(session, user_id)
    if user.disabled_at is None:
        user.disabled_at = at or utcnow()
        session.add(user)
    await sessions.end_all(session, user.id)
    return user


async def enable(session: AsyncSession, user_id: str) -> User:
    user = await get(session, user_id)
    user.disabled_at = None
    session.add(user)
    return user
