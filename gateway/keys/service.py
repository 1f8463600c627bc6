"""A tenant manages its own keys: list, create, revoke. Each change commits with its audit row. Another tenant's
key is NotFound exactly like a missing one. Knows nothing of HTTP."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.audit import service as audit
from gateway.audit.service import Actor
from gateway.auth import service as auth
from gateway.auth.models import ApiKey, Scope
from gateway.db import guarded, transaction
from gateway.errors import InvalidRequest, NotFound, PermissionDenied
from gateway.timeutil import utcnow
from gateway.usage.models import UsageRecord

_K = ApiKey.__table__  # type: ignore[attr-defined]
_U = UsageRecord.__table__  # type: ignore[attr-defined]
# What a self-made key may do unless it asks for more: everything but making more keys.
DEFAULT_SCOPES = [Scope.INFERENCE.value, Scope.DEPLOYMENTS.value, Scope.BILLING.value]


async def list_keys(db: AsyncEngine, tenant_id: str) -> list[dict[str, Any]]:
    """The tenant's keys, newest first, with their last use (derived from usage: no write on the request path)."""
    last_used = sa.select(sa.func.max(_U.c.started_at)).where(_U.c.api_key_id == _K.c.id).scalar_subquery()
    stmt = (
        sa.select(_K.c.id, _K.c.name, _K.c.prefix, _K.c.scopes, _K.c.created_at, _K.c.expires_at, _K.c.revoked_at,
                  last_used.label("last_used_at"))
        .where(_K.c.tenant_id == tenant_id, ~_K.c.key_hash.startswith(auth.playground_hash("")))
        .order_by(_K.c.created_at.desc())
    )  # fmt: skip
    async with guarded(), db.connect() as conn:
        return [dict(r._mapping) for r in await conn.execute(stmt)]


async def create(
    session: AsyncSession,
    actor: Actor,
    tenant_id: str,
    *,
    name: str,
    expires_at: datetime | None,
    scopes: list[str] | None,
    allowed: frozenset[str],
) -> tuple[ApiKey, str]:
    """A new key of the tenant with `scopes` (default: DEFAULT_SCOPES), none beyond `allowed` (the creator's own);
    the plaintext is returned once and never stored."""
    name = name.strip()
    if len(name) > 200:
        raise InvalidRequest("A key's name is at most 200 characters.", param="name")
    wanted = auth.check_scopes(scopes if scopes is not None else [s for s in DEFAULT_SCOPES if s in allowed])
    if beyond := [s for s in wanted if s not in allowed]:
        raise PermissionDenied(f"A key cannot give scopes it lacks itself: {', '.join(beyond)}.", code="missing_scope")
    async with transaction(session):
        key, plaintext = await auth.create_key(session, tenant_id, name, expires_at, wanted)
        await session.flush()
        detail = {"tenant_id": tenant_id, "name": key.name, "prefix": key.prefix, "scopes": wanted}
        await audit.record(await session.connection(), actor, "key.create", key.id, detail)
    return key, plaintext


async def revoke(session: AsyncSession, actor: Actor, tenant_id: str, key_id: str) -> ApiKey:
    """Revoke one of the tenant's keys: NotFound for a missing, revoked or another tenant's key (the same)."""
    async with transaction(session):
        key = await session.get(ApiKey, key_id, with_for_update=True)
        if (
            key is None
            or key.tenant_id != tenant_id
            or key.revoked_at is not None
            or key.key_hash == auth.playground_hash(tenant_id)  # the console's own, not the tenant's to revoke
        ):
            raise NotFound(f"No active key {key_id!r}.", param="key_id")
        key.revoked_at = utcnow()
        session.add(key)
        await session.flush()
        await audit.record(await session.connection(), actor, "key.revoke", key_id, {"tenant_id": tenant_id})
    return key
