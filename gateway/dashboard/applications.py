"""The overview's "Applications" block: tenants that signed up and wait for approval; an owner approves or
rejects each (gateway/people/signup.py does it, with its audit row, in one transaction)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from litestar import Controller, Request, post
from litestar.response import Redirect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.audit.service import Actor, client_ip
from gateway.dashboard import session
from gateway.db import guarded
from gateway.people import sessions, signup, web
from gateway.settings import Settings

_PENDING = sa.text(
    """
    SELECT t.id, t.name, t.created_at, u.name AS user_name, u.email
    FROM tenants t LEFT JOIN users u ON u.tenant_id = t.id AND u.role = 'owner'
    WHERE t.status = 'pending' ORDER BY t.created_at
    """
)


async def pending(db: AsyncEngine) -> list[dict[str, Any]]:
    """The applications waiting for an operator, oldest first."""
    async with guarded(), db.connect() as conn:
        return [dict(r._mapping) for r in await conn.execute(_PENDING)]


class ApplicationsController(Controller):
    path = "/dashboard/applications"
    guards = [session.require_session, session.may_manage]

    @post("/{tenant_id:str}/approve", include_in_schema=False, status_code=303)
    async def approve(
        self, request: Request[Any, Any, Any], tenant_id: str, db_session: AsyncSession, settings: Settings
    ) -> Redirect:
        return await _decide(request, tenant_id, db_session, settings, approve=True)

    @post("/{tenant_id:str}/reject", include_in_schema=False, status_code=303)
    async def reject(
        self, request: Request[Any, Any, Any], tenant_id: str, db_session: AsyncSession, settings: Settings
    ) -> Redirect:
        return await _decide(request, tenant_id, db_session, settings, approve=False)


async def _decide(
    request: Request[Any, Any, Any], tenant_id: str, db_session: AsyncSession, settings: Settings, *, approve: bool
) -> Redirect:
    who = await web.current(session.AREA, request)
    assert who is not None  # the guards let only a signed-in owner through
    actor = Actor(who.actor, client_ip(request))
    tenant = await signup.decide(db_session, actor, tenant_id, approve=approve, terms=signup.terms(settings))
    done = "approved: it can sign in now, with its trial tokens" if approve else "rejected"
    await sessions.set_flash(db_session, who.session_id, f"Application of {tenant.name} {done}.")
    await db_session.commit()
    return Redirect("/admin", status_code=303)
