"""Tenants and keys: create, revoke, and authenticate a bearer key. Knows nothing of HTTP."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway import ids
from gateway.auth.keys import KEY_PREFIX, display_prefix, generate_key, hash_key
from gateway.auth.models import ApiKey, Tenant
from gateway.db import guarded
from gateway.errors import AuthenticationFailed, Conflict, InvalidRequest, NotFound, PermissionDenied
from gateway.limits.service import Limits
from gateway.timeutil import utcnow

_KEYS = ApiKey.__table__  # type: ignore[attr-defined]
_TENANTS = Tenant.__table__  # type: ignore[attr-defined]
_LOOKUP = (
    sa.select(
        _KEYS.c.id,
        _KEYS.c.tenant_id,
        _KEYS.c.expires_at,
        _TENANTS.c.suspended_at,
        _KEYS.c.rpm_limit.label("k_rpm"),
        _KEYS.c.tpm_limit.label("k_tpm"),
        _KEYS.c.max_concurrent_requests.label("k_conc"),
        _TENANTS.c.rpm_limit.label("t_rpm"),
        _TENANTS.c.tpm_limit.label("t_tpm"),
        _TENANTS.c.max_concurrent_requests.label("t_conc"),
    )
    .join(_TENANTS, _TENANTS.c.id == _KEYS.c.tenant_id)
    .where(_KEYS.c.key_hash == sa.bindparam("h"), _KEYS.c.revoked_at.is_(None))
)


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated tenant API key."""

    key_id: str
    tenant_id: str
    limits: tuple[Limits, ...] = ()


_BAD_KEY = "Incorrect API key provided. You can find your API key in your account settings."


async def authenticate(db: AsyncEngine, authorization: str | None) -> Caller:
    """Resolve an `Authorization: Bearer sk-…` header to its live key, or raise AuthenticationFailed."""
    if not authorization or not authorization.startswith("Bearer "):
        raise AuthenticationFailed(
            "You didn't provide an API key. Send it as 'Authorization: Bearer sk-…'.", code="missing_api_key"
        )
    token = authorization[7:].strip()
    if not token.startswith(KEY_PREFIX):
        raise AuthenticationFailed(_BAD_KEY)
    async with guarded(), db.connect() as conn:
        row = (await conn.execute(_LOOKUP, {"h": hash_key(token)})).first()
    if row is None or (row.expires_at is not None and row.expires_at <= utcnow()):
        raise AuthenticationFailed(_BAD_KEY)
    if row.suspended_at is not None:
        raise PermissionDenied(
            "This account is suspended: its API keys cannot be used. Contact the operator.", code="account_suspended"
        )
    limits = (
        Limits(f"t:{row.tenant_id}", row.t_rpm, row.t_tpm, row.t_conc),
        Limits(f"k:{row.id}", row.k_rpm, row.k_tpm, row.k_conc),
    )
    return Caller(key_id=row.id, tenant_id=row.tenant_id, limits=tuple(lim for lim in limits if lim.any))


async def create_tenant(session: AsyncSession, name: str) -> Tenant:
    tenant = Tenant(id=ids.tenant_id(), name=name)
    session.add(tenant)
    try:
        await session.commit()
    except IntegrityError as exc:
        await session.rollback()
        raise Conflict(f"A tenant named {name!r} already exists.", param="name") from exc
    return tenant


async def get_tenant(session: AsyncSession, tenant_id: str) -> Tenant:
    tenant = await session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound(f"No tenant {tenant_id!r}.")
    return tenant


async def create_key(
    session: AsyncSession, tenant_id: str, name: str, expires_at: datetime | None = None
) -> tuple[ApiKey, str]:
    """A new key for the tenant; the plaintext is returned once and never stored."""
    await get_tenant(session, tenant_id)
    if expires_at is not None and (expires_at.tzinfo is None or expires_at <= utcnow()):
        raise InvalidRequest("expires_at must be a future time with a timezone.", param="expires_at")
    plaintext = generate_key()
    key = ApiKey(
        id=ids.key_id(),
        tenant_id=tenant_id,
        name=name,
        prefix=display_prefix(plaintext),
        key_hash=hash_key(plaintext),
        expires_at=expires_at,
    )
    session.add(key)
    await session.commit()
    return key, plaintext


async def revoke_key(session: AsyncSession, key_id: str) -> None:
    key = await session.get(ApiKey, key_id)
    if key is None or key.revoked_at is not None:
        raise NotFound(f"No active key {key_id!r}.")
    key.revoked_at = utcnow()
    await session.commit()
