"""Write and read the audit log. Callers pass who, what, on what, and from where."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from litestar import Request
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit.models import AuditEntry
from gateway.db import guarded
from gateway.timeutil import utcnow

_AUDIT = AuditEntry.__table__  # type: ignore[attr-defined]


def client_ip(request: Request[Any, Any, Any]) -> str | None:
    return request.client.host if request.client else None


async def record(
    db: AsyncEngine,
    actor: str,
    action: str,
    target: str | None,
    detail: dict[str, Any] | None = None,
    ip: str | None = None,
) -> None:
    async with guarded(), db.begin() as conn:
        await conn.execute(
            sa.insert(_AUDIT).values(at=utcnow(), actor=actor, action=action, target=target, detail=detail, ip=ip)
        )


async def query(
    db: AsyncEngine,
    *,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    since: datetime | None = None,
    limit: int = 200,
) -> list[dict[str, Any]]:
    stmt = sa.select(_AUDIT).order_by(_AUDIT.c.id.desc()).limit(min(max(limit, 1), 1000))
    for column, value in (("actor", actor), ("action", action), ("target", target)):
        if value is not None:
            stmt = stmt.where(_AUDIT.c[column] == value)
    if since is not None:
        stmt = stmt.where(_AUDIT.c.at >= since)
    async with guarded(), db.connect() as conn:
        return [dict(r._mapping) for r in await conn.execute(stmt)]
