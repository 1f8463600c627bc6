"""Admin API for a tenant's users: list them, and reset one's password when it is forgotten."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.admin.guard import admin_guard
from gateway.audit.service import Actor
from gateway.people import service as people


class AdminUsersController(Controller):
    path = "/admin/tenants/{tenant_id:str}/users"
    guards = [admin_guard]
    tags = ["Admin"]

    @get("/")
    async def list_users(self, tenant_id: str, db_session: AsyncSession) -> dict[str, Any]:
        """The tenant's users (the first is its owner); never a password hash."""
        return {
            "object": "list",
            "data": [people.user_json(u) for u in await people.tenant_users(db_session, tenant_id)],
        }

    @post("/{user_id:str}/reset-password", status_code=200)
    async def reset_password(
        self, request: Request[Any, Any, Any], tenant_id: str, user_id: str, db_session: AsyncSession
    ) -> dict[str, Any]:
        """A new random password, shown this once (hand it over; the user changes it on the console's Account
        page). Every session of the user ends. Another tenant's user is the same 404 as a missing one."""
        user, password = await people.reset_tenant_user_password(db_session, Actor.of(request), tenant_id, user_id)
        return {**people.user_json(user), "password": password}
