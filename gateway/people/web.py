"""The browser side of sessions, shared by the admin dashboard and the tenant console: the session cookie, the
session behind it (looked up in PostgreSQL on every request), and the guards that need one.

Written by hand rather than with Litestar's ServerSideSessionConfig: its Store is a key → bytes map, while
ending every session of a user (a new password, disabling) needs the user id as a column; it renews the
expiry and rewrites the data on every response, where we want idle and absolute expiry with last_seen_at written
at most once a minute; and it keeps the id a browser already had, where sign-in must always issue a new one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers import BaseRouteHandler
from litestar.types import Guard, Scope

from gateway.errors import PermissionDenied
from gateway.people import sessions
from gateway.people.roles import Permission, allows
from gateway.people.sessions import Principal, SessionPolicy
from gateway.people.signin import SignInPolicy
from gateway.people.throttle import ThrottlePolicy
from gateway.settings import SessionSettings, Settings


class SignInRequired(NotAuthorizedException):
    """No live session; pages answer with a redirect to their sign-in form."""


@dataclass(frozen=True, slots=True)
class Area:
    """A signed-in part of the site: its cookie (scoped to its path) and which kind of user it is for."""

    cookie: str
    path: str
    operators: bool


def policy(settings: SessionSettings) -> SignInPolicy:
    return SignInPolicy(
        sessions=SessionPolicy(
            idle=timedelta(minutes=settings.idle_minutes), lifetime=timedelta(hours=settings.max_hours)
        ),
        throttle=ThrottlePolicy(
            per_account=settings.signin_max_failures,
            per_address=settings.signin_max_failures_per_address,
            window=timedelta(minutes=settings.signin_window_minutes),
        ),
    )


def secure(scope: Scope, settings: SessionSettings) -> bool:
    """Whether cookies get the Secure flag: as SESSION_COOKIE_SECURE says, or (auto) when the request came over
    https, directly or through a proxy whose forwarded headers uvicorn trusts."""
    if settings.cookie_secure != "auto":
        return settings.cookie_secure == "true"
    return scope.get("scheme") in ("https", "wss")


def session_cookie(area: Area, connection: ASGIConnection[Any, Any, Any, Any], token: str) -> Cookie:
    """The cookie that carries a new session's token: HttpOnly, SameSite=Lax, for the session's lifetime."""
    settings: Settings = connection.app.state.settings
    return Cookie(
        key=area.cookie,
        value=token,
        path=area.path,
        max_age=int(settings.sessions.max_hours * 3600),
        httponly=True,
        samesite="lax",
        secure=secure(connection.scope, settings.sessions),
    )


def cleared_cookie(area: Area, connection: ASGIConnection[Any, Any, Any, Any]) -> Cookie:
    settings: Settings = connection.app.state.settings
    return Cookie(key=area.cookie, value="", path=area.path, max_age=0, httponly=True, samesite="lax",
                  secure=secure(connection.scope, settings.sessions))  # fmt: skip


def token(area: Area, connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    return connection.cookies.get(area.cookie, "")


async def current(area: Area, connection: ASGIConnection[Any, Any, Any, Any]) -> Principal | None:
    """The principal of the request's live session in this area, or None; looked up once per request."""
    state = connection.scope.setdefault("state", {})
    key = f"principal:{area.cookie}"
    if key in state:
        return state[key]  # type: ignore[no-any-return]
    settings: Settings = connection.app.state.settings
    admin_token = settings.admin.token.get_secret_value() if settings.admin.token is not None else None
    found = None
    if raw := token(area, connection):
        async with connection.app.state.sessions() as db:
            found = await sessions.resolve(
                db, raw, policy(settings.sessions).sessions, admin_token=admin_token,
                take_flash=connection.scope.get("method") == "GET",
            )  # fmt: skip
    if found is not None and found.is_operator != area.operators:
        found = None
    state[key] = found
    return found


def signed_in(area: Area) -> Guard:
    """Guard: a live session of this area. Pages without one redirect to sign-in; other requests get 403."""

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        if await current(area, connection) is not None:
            return
        if connection.scope.get("method") == "GET":
            raise SignInRequired("Sign in first.")
        raise PermissionDeniedException("Sign in first.")

    return guard


def requires(area: Area, permission: Permission) -> Guard:
    """Guard: the signed-in operator's role allows `permission` (after `signed_in`)."""

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        principal = await current(area, connection)
        if principal is None:
            raise PermissionDeniedException("Sign in first.")
        if not allows(principal.role, permission):
            raise PermissionDenied(f"Your role ({principal.role}) may not do this.", code="role_forbidden")

    return guard
