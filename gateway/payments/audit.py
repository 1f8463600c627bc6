"""Audit rows written in the caller's transaction, with the signature main's gateway.audit.service now has.

(This branch predates that change; at merge, `record` and `Actor` here are main's and this module goes.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.audit.models import AuditEntry
from gateway.audit.service import client_ip
from gateway.timeutil import utcnow

_AUDIT = AuditEntry.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts ('admin', a tenant key's id, or 'billing' for the automatic rules) and from where."""

    name: str
    ip: str | None = None

    @classmethod
    def of(cls, request: Any, name: str = "admin") -> Actor:
        return cls(name, client_ip(request))


BILLING = Actor("billing")


async def record(
    conn: AsyncConnection, actor: Actor, action: str, target: str | None, detail: dict[str, Any] | None = None
) -> None:
    """The audit row of an action, in the caller's transaction (the one that makes the change)."""
    values = {"at": utcnow(), "actor": actor.name, "action": action, "target": target, "detail": detail}
    await conn.execute(sa.insert(_AUDIT).values(**values, ip=actor.ip))
