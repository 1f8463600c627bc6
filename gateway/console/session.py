"""The console's sign-in area: its own session cookie, scoped to /console (server-side sessions:
gateway/people/web.py). A session only works while its tenant is active: a tenant suspended (or rejected) after
sign-in loses the console on its next request."""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import PermissionDeniedException
from litestar.handlers import BaseRouteHandler

from gateway.people import signup, web
from gateway.people.errors import TenantNotActive
from gateway.people.sessions import Principal

COOKIE = "gw_console_session"
AREA = web.Area(cookie=COOKIE, path="/console", operators=False)
SignInRequired = web.SignInRequired


async def current(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal | None:
    """The live console session's user, if its tenant is active (else None, as if signed out)."""
    principal = await web.current(AREA, connection)
    if principal is None or principal.tenant_id is None:
        return None
    async with connection.app.state.sessions() as db:
        try:
            await signup.check_tenant_active(db, principal.tenant_id)
        except TenantNotActive:
            connection.scope["state"][f"principal:{COOKIE}"] = None
            return None
    return principal


async def require_session(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard: a live console session of an active tenant; pages without one redirect to sign-in."""
    if await current(connection) is not None:
        return
    if connection.scope.get("method") == "GET":
        raise SignInRequired("Sign in first.")
    raise PermissionDeniedException("Sign in first.")


def who(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """The signed-in tenant user (after require_session)."""
    principal = connection.scope["state"].get(f"principal:{COOKIE}")
    assert principal is not None and principal.tenant_id is not None
    return principal  # type: ignore[no-any-return]
