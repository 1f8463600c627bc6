"""A tenant's upload bounds: uploads started per minute, live deployments, adapter bytes stored.

Each is the tenant's own value (tenants table) or else the TENANT_* default (gateway/settings.py); None is
unlimited. Uploads are counted per minute in the shared `rate_counters` rows (subject `u:<tenant>`, pruned with
the others), so the bound holds across processes; a refused or failed upload counts too (its CPU was spent).
Deployments and bytes are checked cheaply before the upload is read, and exactly, under a per-tenant advisory
lock held until the new deployment's row commits, just before it is registered.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.db import guarded
from gateway.errors import PayloadTooLarge, PermissionDenied, RateLimited
from gateway.settings import TenantDefaults

_BOUNDS = sa.text("SELECT max_deployments, max_adapter_bytes, uploads_per_minute FROM tenants WHERE id = :t")
_HELD = sa.text(
    "SELECT count(*) AS deployments, coalesce(sum(size_bytes), 0) AS bytes FROM adapters"
    " WHERE tenant_id = :t AND deleted_at IS NULL"
)
# Counts the upload unless the minute is full; no row back means refused.
_COUNT_UPLOAD = sa.text(
    """
    INSERT INTO rate_counters AS c (subject, window_start, requests, tokens)
    VALUES (:s, date_trunc('minute', statement_timestamp()), 1, 0)
    ON CONFLICT (subject, window_start) DO UPDATE SET requests = c.requests + 1 WHERE c.requests < :n
    RETURNING c.requests
    """
)
_RESET_S = sa.text("SELECT ceil(60 - extract(epoch FROM statement_timestamp()) % 60)::int")
_LOCK = sa.text("SELECT pg_advisory_xact_lock(hashtextextended('lgw-deployments:' || :t, 0))")


@dataclass(frozen=True, slots=True)
class UploadBounds:
    """A tenant's upload bounds; None is unlimited."""

    tenant_id: str
    max_deployments: int | None
    max_adapter_bytes: int | None
    uploads_per_minute: int | None


async def bounds(db: AsyncEngine, tenant_id: str, defaults: TenantDefaults) -> UploadBounds:
    async with guarded(), db.connect() as conn:
        row = (await conn.execute(_BOUNDS, {"t": tenant_id})).one()
    own = TenantDefaults.effective
    return UploadBounds(
        tenant_id,
        own(row.max_deployments, defaults.max_deployments),
        own(row.max_adapter_bytes, defaults.max_adapter_bytes),
        own(row.uploads_per_minute, defaults.uploads_per_minute),
    )


async def admit_upload(db: AsyncEngine, b: UploadBounds) -> None:
    """Count an upload in its tenant's minute and check there is room for one more deployment, before the
    upload is read; RateLimited (429), PermissionDenied (403) or PayloadTooLarge (413) otherwise."""
    async with guarded(), db.begin() as conn:
        if b.uploads_per_minute is not None:
            counted = (await conn.execute(_COUNT_UPLOAD, {"s": f"u:{b.tenant_id}", "n": b.uploads_per_minute})).first()
            if counted is None:
                retry = max(int((await conn.execute(_RESET_S)).scalar_one()), 1)
                raise RateLimited(
                    f"Upload limit reached: {b.uploads_per_minute} adapter uploads per minute "
                    f"(uploads_per_minute). Retry in {retry}s.",
                    param="uploads_per_minute",
                    headers={"Retry-After": str(retry)},
                )
        held = (await conn.execute(_HELD, {"t": b.tenant_id})).one()
    _check(b, held.deployments, held.bytes, 0)


async def lock_and_check(session: AsyncSession, b: UploadBounds, size_bytes: int) -> None:
    """Take the tenant's deployment lock in `session`'s transaction (released when it commits: keep it until the
    new row is committed) and check a deployment of `size_bytes` fits."""
    if b.max_deployments is None and b.max_adapter_bytes is None:
        return
    await session.execute(_LOCK, {"t": b.tenant_id})
    held = (await session.execute(_HELD, {"t": b.tenant_id})).one()
    try:
        _check(b, held.deployments, held.bytes, size_bytes)
    except (PermissionDenied, PayloadTooLarge):
        await session.rollback()  # releases the lock
        raise


def _check(b: UploadBounds, deployments: int, stored: int, size_bytes: int) -> None:
    if b.max_deployments is not None and deployments >= b.max_deployments:
        raise PermissionDenied(
            f"Deployment limit reached: this account may hold {b.max_deployments} deployments (max_deployments) "
            f"and holds {deployments}. Delete one first.",
            code="deployment_limit_reached",
            param="max_deployments",
        )
    if b.max_adapter_bytes is not None and stored + max(size_bytes, 1) > b.max_adapter_bytes:
        what = f"this adapter's {size_bytes} bytes" if size_bytes else "another adapter"
        raise PayloadTooLarge(
            f"Adapter storage limit reached: this account may store {b.max_adapter_bytes} adapter bytes "
            f"(max_adapter_bytes), holds {stored}, and {what} would not fit. Delete a deployment first.",
            code="adapter_storage_limit_reached",
            param="max_adapter_bytes",
        )
