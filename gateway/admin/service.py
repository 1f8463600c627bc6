"""Operator views and changes: tenants, keys, deployments. Each change commits with its audit row, in one
transaction. Knows nothing of HTTP."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from billing import ledger
from gateway.adapters.models import Adapter
from gateway.audit import service as audit
from gateway.audit.service import Actor
from gateway.auth import service as auth
from gateway.auth.models import ApiKey, Tenant
from gateway.db import guarded, transaction
from gateway.errors import Conflict, InvalidRequest, NotFound
from gateway.payments import dunning
from gateway.settings import TenantDefaults
from gateway.timeutil import utcnow
from gateway.usage.models import UsageRecord

_T = Tenant.__table__  # type: ignore[attr-defined]
_K = ApiKey.__table__  # type: ignore[attr-defined]
_A = Adapter.__table__  # type: ignore[attr-defined]
_U = UsageRecord.__table__  # type: ignore[attr-defined]

_TENANTS = sa.text(
    """
    SELECT t.id, t.name, t.created_at, t.suspended_at, t.status, a.mode AS billing_mode,
           t.rpm_limit, t.tpm_limit, t.max_concurrent_requests,
           t.max_deployments, t.max_adapter_bytes, t.uploads_per_minute,
           (SELECT coalesce(sum(d.size_bytes), 0) FROM adapters d
            WHERE d.tenant_id = t.id AND d.deleted_at IS NULL) AS adapter_bytes,
           (SELECT count(*) FROM api_keys k WHERE k.tenant_id = t.id AND k.revoked_at IS NULL) AS active_keys,
           (SELECT count(*) FROM adapters d WHERE d.tenant_id = t.id AND d.deleted_at IS NULL) AS deployments,
           coalesce(l.balance_after_micros, 0) AS credit_micros, coalesce(l.trial_after, 0) AS trial_tokens_remaining
    FROM tenants t
    LEFT JOIN billing_accounts a ON a.tenant_id = t.id
    LEFT JOIN LATERAL (SELECT balance_after_micros, trial_after FROM ledger_entries e
                       WHERE e.tenant_id = t.id ORDER BY e.id DESC LIMIT 1) l ON true
    WHERE (CAST(:tid AS text) IS NULL OR t.id = :tid) AND (CAST(:status AS text) IS NULL OR t.status = :status)
    ORDER BY t.created_at
    """
)


# a tenant's limit column → the TenantDefaults field it falls back to
TENANT_LIMITS = {
    "rpm_limit": "rpm",
    "tpm_limit": "tpm",
    "max_concurrent_requests": "max_concurrent",
    "max_deployments": "max_deployments",
    "max_adapter_bytes": "max_adapter_bytes",
    "uploads_per_minute": "uploads_per_minute",
}


async def list_tenants(
    db: AsyncEngine, tenant_id: str | None = None, defaults: TenantDefaults | None = None, status: str | None = None
) -> list[dict[str, Any]]:
    """Tenants as stored (only those of `status`, if given); with `defaults`, each also has `effective_limits`
    (what applies, null: unlimited)."""
    async with guarded(), db.connect() as conn:
        rows = [dict(r._mapping) for r in await conn.execute(_TENANTS, {"tid": tenant_id, "status": status})]
    for r in rows:
        r["suspended"] = r["suspended_at"] is not None
        if defaults is not None:
            r["effective_limits"] = {
                col: TenantDefaults.effective(r[col], getattr(defaults, field)) for col, field in TENANT_LIMITS.items()
            }
    return rows


async def get_tenant(db: AsyncEngine, tenant_id: str, defaults: TenantDefaults | None = None) -> dict[str, Any]:
    rows = await list_tenants(db, tenant_id, defaults)
    if not rows:
        raise NotFound(f"No tenant {tenant_id!r}.", param="tenant_id")
    return rows[0]


def check_limits(limits: dict[str, int | None], *, tenant: bool = False) -> None:
    """A key's limit is n > 0 or null (no limit of the key's); a tenant's may also be 0 (unlimited), and null
    follows the TENANT_* default."""
    for name, value in limits.items():
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < (0 if tenant else 1)
        ):
            if tenant:
                raise InvalidRequest(
                    f"{name} must be a positive integer, 0 for unlimited, or null for the default.", param=name
                )
            raise InvalidRequest(f"{name} must be a positive integer, or null for unlimited.", param=name)


async def create_tenant(session: AsyncSession, actor: Actor, name: str, terms: ledger.AccountDefaults) -> Tenant:
    """A tenant, its billing account (with its free-trial grant) and the audit row: all or nothing."""
    async with transaction(session):
        tenant = await auth.create_tenant(session, name)  # Conflict if the name is taken
        conn = await session.connection()
        await ledger.open_account(conn, tenant.id, terms.mode, terms.trial_tokens, terms.currency)
        detail = {"name": tenant.name, "billing_mode": terms.mode, "trial_tokens": terms.trial_tokens}
        await audit.record(conn, actor, "tenant.create", tenant.id, detail)
    return tenant


async def patch_tenant(
    session: AsyncSession,
    actor: Actor,
    tenant_id: str,
    name: str | None,
    suspended: bool | None,
    limits: dict[str, int | None],
) -> None:
    """Rename, suspend/resume, set limits (null: the TENANT_* default, 0: unlimited). A duplicate name is a
    Conflict."""
    check_limits(limits, tenant=True)
    tenant = await _load_and_set(session, Tenant, tenant_id, "tenant", name, limits, checked=True)
    if suspended is not None:
        if not suspended and tenant.suspended_reason is not None:  # resumed by hand: dunning's invoices waived
            await dunning.waive_all(await session.connection(), tenant_id)
            tenant.suspended_reason = None
        tenant.suspended_at = (tenant.suspended_at or utcnow()) if suspended else None
    changes: dict[str, Any] = {k: v for k, v in (("name", name), ("suspended", suspended)) if v is not None}
    taken = Conflict(f"A tenant named {name!r} already exists.", param="name")
    await _commit_audited(session, actor, "tenant.update", tenant_id, changes | limits, duplicate=taken)


async def create_key(
    session: AsyncSession,
    actor: Actor,
    tenant_id: str,
    name: str,
    expires_at: datetime | None,
    limits: dict[str, int | None],
) -> tuple[ApiKey, str]:
    """A new key with its limits; the plaintext is returned once and never stored."""
    check_limits(limits)
    key, plaintext = await auth.create_key(session, tenant_id, name, expires_at)
    for field_name, value in limits.items():
        setattr(key, field_name, value)
    detail = {"tenant_id": tenant_id, "name": key.name, "prefix": key.prefix}
    await _commit_audited(session, actor, "key.create", key.id, detail)
    return key, plaintext


async def patch_key(
    session: AsyncSession, actor: Actor, key_id: str, name: str | None, limits: dict[str, int | None]
) -> ApiKey:
    """Rename a key or set its limits."""
    key = await _load_and_set(session, ApiKey, key_id, "key", name, limits)
    await _commit_audited(session, actor, "key.update", key_id, limits)
    return key


async def revoke_key(session: AsyncSession, actor: Actor, key_id: str) -> ApiKey:
    """Revoke a key (NotFound if unknown or already revoked); it stops working on its next request."""
    key = await auth.revoke_key(session, key_id)
    await _commit_audited(session, actor, "key.revoke", key_id, None)
    return key


async def _commit_audited(
    session: AsyncSession,
    actor: Actor,
    action: str,
    target: str,
    detail: dict[str, Any] | None,
    *,
    duplicate: Conflict | None = None,
) -> None:
    """The audit row of the session's change, then one commit for both."""
    async with transaction(session, duplicate=duplicate):
        await audit.record(await session.connection(), actor, action, target, detail)


_Row = TypeVar("_Row", Tenant, ApiKey)


async def _load_and_set(
    session: AsyncSession,
    model: type[_Row],
    row_id: str,
    what: str,
    name: str | None,
    limits: dict[str, int | None],
    checked: bool = False,
) -> _Row:
    """The tenant or key with its new name and limits set (not committed); NotFound if there is none."""
    if not checked:
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
