"""The tenant console at /console: overview, API keys, usage, invoices, account. Thin: parse, call, render."""

from __future__ import annotations

from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any

from litestar import Controller, Request, Response, Router, get, post
from litestar.exceptions import HTTPException
from litestar.response import Redirect, Template
from litestar.static_files import create_static_files_router
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.audit import service as audit
from gateway.audit.service import Actor, client_ip
from gateway.auth.models import ALL_SCOPES
from gateway.console import service, session
from gateway.console.billing import BillingController
from gateway.console.deployments import DeploymentsController
from gateway.console.pages import page
from gateway.console.signin import ConsoleSignInController
from gateway.dashboard.pages import Form
from gateway.errors import GatewayError, InvalidRequest
from gateway.keys import service as keys
from gateway.people import service as people
from gateway.people import sessions, web
from gateway.people.errors import InvalidCredentials, WeakPassword
from gateway.settings import Settings

TEMPLATES = Path(__file__).parent / "templates"


def _expiry(value: str) -> datetime | None:
    """A date from the form (YYYY-MM-DD): the key works until the end of that day, UTC."""
    if not value.strip():
        return None
    try:
        day = datetime.strptime(value.strip(), "%Y-%m-%d").date()
    except ValueError:
        raise InvalidRequest("Expires on must be a date (YYYY-MM-DD).", param="expires_at") from None
    return datetime.combine(day, time(23, 59, 59), tzinfo=UTC)


class ConsoleController(Controller):
    guards = [session.require_session]

    @get("/", include_in_schema=False)
    async def overview(self, request: Request[Any, Any, Any], db_engine: AsyncEngine) -> Template:
        tenant_id = session.who(request).tenant_id or ""  # the guard let only a tenant's user through
        month = await service.usage(db_engine, tenant_id, service.month_start())
        return page(request, "overview.html", balance=await service.balance(db_engine, tenant_id),
                    totals=service.totals(month), chart=service.chart(month))  # fmt: skip

    @get("/keys", include_in_schema=False)
    async def key_list(self, request: Request[Any, Any, Any], db_engine: AsyncEngine) -> Template:
        return await self._keys_page(request, db_engine)

    async def _keys_page(
        self, request: Request[Any, Any, Any], db_engine: AsyncEngine, status_code: int = 200, **context: Any
    ) -> Template:
        tenant_id = session.who(request).tenant_id
        rows = await keys.list_keys(db_engine, tenant_id)  # type: ignore[arg-type]
        return page(request, "keys.html", status_code=status_code, keys=rows, scopes=ALL_SCOPES, **context)

    @post("/keys", include_in_schema=False, status_code=200)
    async def create_key(
        self, request: Request[Any, Any, Any], data: Form, db_session: AsyncSession, db_engine: AsyncEngine
    ) -> Template:
        who = session.who(request)
        chosen = [s for s in ALL_SCOPES if data.get(f"scope_{s}")] or None  # none ticked: the default scopes
        try:
            key, plaintext = await keys.create(
                db_session, Actor(who.actor, client_ip(request)), who.tenant_id,  # type: ignore[arg-type]
                name=data.get("name", ""), expires_at=_expiry(data.get("expires_at", "")), scopes=chosen,
                allowed=frozenset(ALL_SCOPES),
            )  # fmt: skip
        except GatewayError as exc:
            return await self._keys_page(request, db_engine, exc.status_code, error=exc.message)
        return await self._keys_page(request, db_engine, new_key=plaintext, new_key_name=key.name)

    @post("/keys/{key_id:str}/revoke", include_in_schema=False, status_code=303)
    async def revoke_key(self, request: Request[Any, Any, Any], key_id: str, db_session: AsyncSession) -> Redirect:
        who = session.who(request)
        key = await keys.revoke(db_session, Actor(who.actor, client_ip(request)), who.tenant_id, key_id)  # type: ignore[arg-type]
        await sessions.set_flash(db_session, who.session_id, f"Key {key.prefix}… revoked.")
        await db_session.commit()
        return Redirect("/console/keys", status_code=303)

    @get("/usage", include_in_schema=False)
    async def usage(self, request: Request[Any, Any, Any], db_engine: AsyncEngine, settings: Settings) -> Template:
        rows = await service.usage(db_engine, session.who(request).tenant_id)  # type: ignore[arg-type]
        return page(request, "usage.html", rows=rows, totals=service.totals(rows), currency=settings.billing.currency)

    @get("/usage.csv", include_in_schema=False)
    async def usage_csv(self, request: Request[Any, Any, Any], db_engine: AsyncEngine) -> Response[str]:
        rows = await service.usage(db_engine, session.who(request).tenant_id)  # type: ignore[arg-type]
        return Response(service.usage_csv(rows), media_type="text/csv", headers={
            "Content-Disposition": 'attachment; filename="usage.csv"', "Cache-Control": "no-store"})  # fmt: skip

    @get("/invoices", include_in_schema=False)
    async def invoices(self, request: Request[Any, Any, Any], db_engine: AsyncEngine) -> Template:
        rows = await service.invoice_list(db_engine, session.who(request).tenant_id)  # type: ignore[arg-type]
        return page(request, "invoices.html", invoices=rows)

    @get("/account", include_in_schema=False)
    async def account(self, request: Request[Any, Any, Any]) -> Template:
        return page(request, "account.html")

    @post("/account/password", include_in_schema=False, status_code=303)
    async def change_password(
        self, request: Request[Any, Any, Any], data: Form, settings: Settings, db_session: AsyncSession
    ) -> Template | Redirect:
        who = session.who(request)
        new = data.get("new_password", "")
        try:
            if new != data.get("confirm_password", ""):
                raise WeakPassword("The two new passwords differ.", param="confirm_password")
            user = await people.change_password(db_session, who.user_id, data.get("current_password", ""), new)  # type: ignore[arg-type]
        except (InvalidCredentials, WeakPassword) as exc:
            await db_session.rollback()
            return page(request, "account.html", status_code=exc.status_code, error=exc.message)
        token = await sessions.start(
            db_session, web.policy(settings.sessions).sessions, user=user, ip=client_ip(request),
            flash="Password changed. Every other session of yours was signed out.",
        )  # fmt: skip
        await audit.record(await db_session.connection(), Actor(who.actor, client_ip(request)),
                           "user.password_change", user.id, None)  # fmt: skip
        await db_session.commit()  # the new password, the new session and the audit row together
        return Redirect("/console/account", status_code=303, cookies=[web.session_cookie(session.AREA, request, token)])


def _sign_in(request: Request[Any, Any, Any], _: Exception) -> Response[Any]:
    return Redirect("/console/login", status_code=303)


def _error_page(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Errors on console pages are pages too (a missing id and another tenant's id: the same 404 page)."""
    if isinstance(exc, GatewayError):
        status, message, headers = exc.status_code, exc.message, exc.headers
    elif isinstance(exc, HTTPException):
        status, message, headers = exc.status_code, exc.detail, dict(exc.headers or {})
    else:
        status, message, headers = 500, "Something went wrong.", {}
    return page(request, "error.html", status_code=status, headers=headers, status=status, message=message)


def console_routes() -> list[Router]:
    """The console's pages (behind its session cookie, but sign-up and sign-in) and its script (not)."""
    pages = Router(
        path="/console",
        route_handlers=[ConsoleSignInController, ConsoleController, DeploymentsController, BillingController],
        exception_handlers={session.SignInRequired: _sign_in, GatewayError: _error_page, HTTPException: _error_page},
        include_in_schema=False,
    )
    static = create_static_files_router(
        path="/console/static", directories=[Path(__file__).parent / "static"], include_in_schema=False
    )
    return [pages, static]
