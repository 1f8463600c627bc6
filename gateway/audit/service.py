"""Write and read the audit log. An action writes its row in its own transaction, so both commit or neither."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.audit.models import AuditEntry
from gateway.db import guarded
from gateway.timeutil import utcnow

if TYPE_CHECKING:
    from litestar import Request

_AUDIT = AuditEntry.__table__  # type: ignore[attr-defined]


def client_ip(request: Request[Any, Any, Any]) -> str | None:
    return request.client.host if request.client else None


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts ('admin' or the tenant key's id) and from where."""

    name: str
    ip: str | None = None

    @classmethod
    def of(cls, request: Request[Any, Any, Any], name: str = "admin") -> Actor:
        return cls(name, client_ip(request))


async def record(
    conn: AsyncConnection, actor: Actor, action: str, target: str | None, detail: dict[str, Any] | None = None
) -> None:
    """The audit row of an action, in the caller's transaction (the one that makes the change)."""
    values = {"at": utcnow(), "actor": actor.name, "action": action, "target": target, "detail": detail}
    await conn.execute(sa.insert(_AUDIT).values(**values, ip=actor.ip))


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
