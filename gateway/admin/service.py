"""Operator views and changes: tenants, keys, deployments. Knows nothing of HTTP."""

from __future__ import annotations

from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.adapters.models import Adapter
from gateway.auth.models import ApiKey, Tenant
from gateway.db import guarded
from gateway.errors import Conflict, InvalidRequest, NotFound
from gateway.payments import dunning
from gateway.timeutil import utcnow
from gateway.usage.models import UsageRecord

_T = Tenant.__table__  # type: ignore[attr-defined]
_K = ApiKey.__table__  # type: ignore[attr-defined]
_A = Adapter.__table__  # type: ignore[attr-defined]
_U = UsageRecord.__table__  # type: ignore[attr-defined]

_TENANTS = sa.text(
    """
    SELECT t.id, t.name, t.created_at, t.suspended_at, a.mode AS billing_mode,
           t.rpm_limit, t.tpm_limit, t.max_concurrent_requests,
           (SELECT count(*) FROM api_keys k WHERE k.tenant_id = t.id AND k.revoked_at IS NULL) AS active_keys,
           (SELECT count(*) FROM adapters d WHERE d.tenant_id = t.id AND d.deleted_at IS NULL) AS deployments,
           coalesce(l.balance_after_micros, 0) AS credit_micros, coalesce(l.trial_after, 0) AS trial_tokens_remaining
    FROM tenants t
    LEFT JOIN billing_accounts a ON a.tenant_id = t.id
    LEFT JOIN LATERAL (SELECT balance_after_micros, trial_after FROM ledger_entries e
                       WHERE e.tenant_id = t.id ORDER BY e.id DESC LIMIT 1) l ON true
    WHERE (CAST(:tid AS text) IS NULL OR t.id = :tid)
    ORDER BY t.created_at
    """
)


async def list_tenants(db: AsyncEngine, tenant_id: str | None = None) -> list[dict[str, Any]]:
    async with guarded(), db.connect() as conn:
        rows = [dict(r._mapping) for r in await conn.execute(_TENANTS, {"tid": tenant_id})]
    for r in rows:
        r["suspended"] = r["suspended_at"] is not None
    return rows


async def get_tenant(db: AsyncEngine, tenant_id: str) -> dict[str, Any]:
    rows = await list_tenants(db, tenant_id)
    if not rows:
        raise NotFound(f"No tenant {tenant_id!r}.", param="tenant_id")
    return rows[0]


def check_limits(limits: dict[str, int | None]) -> None:
    for name, value in limits.items():
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise InvalidRequest(f"{name} must be a positive integer, or null for unlimited.", param=name)


async def patch_tenant(
    session: AsyncSession, tenant_id: str, name: str | None, suspended: bool | None, limits: dict[str, int | None]
) -> None:
    tenant = await _load_and_set(session, Tenant, tenant_id, "tenant", name, limits)
    if suspended is not None:
        if not suspended and tenant.suspended_reason is not None:  # resumed by hand: dunning's invoices waived
            await dunning.waive_all(await session.connection(), tenant_id)
            tenant.suspended_reason = None
        tenant.suspended_at = (tenant.suspended_at or utcnow()) if suspended else None
    try:
        await session.commit()
    except IntegrityError as exc:
        await session.rollback()
        raise Conflict(f"A tenant named {name!r} already exists.", param="name") from exc


async def patch_key(session: AsyncSession, key_id: str, name: str | None, limits: dict[str, int | None]) -> ApiKey:
    key = await _load_and_set(session, ApiKey, key_id, "key", name, limits)
    await session.commit()
    return key


_Row = TypeVar("_Row", Tenant, ApiKey)


async def _load_and_set(
    session: AsyncSession, model: type[_Row], row_id: str, what: str, name: str | None, limits: dict[str, int | None]
) -> _Row:
    """The tenant or key with its new name and limits set (not committed); NotFound if there is none."""
    check_limits(limits)
    row = await session.get(model, row_id)
    if row is None:
        raise NotFound(f"No {what} {row_id!r}.", param=f"{what}_id")
    for field_name, value in limits.items():
        setattr(row, field_name, value)
    if name is not None:
        row.name = name
    return row


async def list_keys(db: AsyncEngine, tenant_id: str) -> list[dict[str, Any]]:
    """Keys with their display prefix and last use (derived from usage: no write on the request path)."""
    last_used = sa.select(sa.func.max(_U.c.started_at)).where(_U.c.api_key_id == _K.c.id).scalar_subquery()
    stmt = (
        sa.select(_K.c.id, _K.c.tenant_id, _K.c.name, _K.c.prefix, _K.c.created_at, _K.c.expires_at,
                  _K.c.revoked_at, _K.c.rpm_limit, _K.c.tpm_limit, _K.c.max_concurrent_requests,
                  last_used.label("last_used_at"))
        .where(_K.c.tenant_id == tenant_id)
        .order_by(_K.c.created_at)
    )  # fmt: skip
    async with guarded(), db.connect() as conn:
        if (await conn.execute(sa.select(_T.c.id).where(_T.c.id == tenant_id))).first() is None:
            raise NotFound(f"No tenant {tenant_id!r}.", param="tenant_id")
        return [dict(r._mapping) for r in await conn.execute(stmt)]


async def list_deployments(db: AsyncEngine, tenant_id: str | None = None) -> list[dict[str, Any]]:
    stmt = (
        sa.select(_A.c.id, _A.c.tenant_id, _A.c.name, _A.c.base_model, _A.c.status, _A.c.status_reason, _A.c.rank,
                  _A.c.size_bytes, _A.c.created_at, _A.c.deleted_at)
        .order_by(_A.c.created_at.desc())
    )  # fmt: skip
    if tenant_id:
        stmt = stmt.where(_A.c.tenant_id == tenant_id)
    async with guarded(), db.connect() as conn:
        return [dict(r._mapping) for r in await conn.execute(stmt)]
