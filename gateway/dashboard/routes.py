"""The admin dashboard at /admin: sign-in, overview, tenant drill-down, key revocation (the other actions:
gateway/dashboard/actions/). Thin: parse, query, render."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from litestar import Controller, Request, Response, Router, get, post
from litestar.exceptions import HTTPException
from litestar.params import Parameter
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.admin import service as admin
from gateway.audit.service import Actor, client_ip
from gateway.dashboard import applications, session, views
from gateway.dashboard.account import AccountController
from gateway.dashboard.actions.billing import BillingController
from gateway.dashboard.actions.operators import OperatorsController
from gateway.dashboard.actions.tenants import TenantActions
from gateway.dashboard.format import FILTERS
from gateway.dashboard.pages import STATIC, page
from gateway.dashboard.signin import SignInController
from gateway.errors import GatewayError
from gateway.people import sessions, web
from gateway.settings import Settings

HERE = Path(__file__).parent


class DashboardController(Controller):
    guards = [session.require_session]

    @get("/", include_in_schema=False)
    async def overview(
        self, request: Request[Any, Any, Any], db_engine: AsyncEngine, settings: Settings,
        window: Annotated[str, Parameter(query="range")] = "24h",
    ) -> Template:  # fmt: skip
        return await views.overview(request, db_engine, settings, window)

    @get("/dashboard/tenants/{tenant_id:str}", include_in_schema=False)
    async def tenant(
        self, request: Request[Any, Any, Any], tenant_id: str, db_engine: AsyncEngine, settings: Settings,
        window: Annotated[str, Parameter(query="range")] = "7d",
    ) -> Template:  # fmt: skip
        return await views.tenant(request, db_engine, settings, tenant_id, window)

    @post("/dashboard/keys/{key_id:str}/revoke", include_in_schema=False, status_code=303, guards=[session.may_manage])
    async def revoke(self, request: Request[Any, Any, Any], key_id: str, db_session: AsyncSession) -> Redirect:
        who = await web.current(session.AREA, request)
        assert who is not None  # the guards let only a signed-in operator through
        # NotFound if unknown or already revoked; the revocation and its audit row commit together
        key = await admin.revoke_key(db_session, Actor(who.actor, client_ip(request)), key_id)
        message = f"Key {key.prefix}… revoked. It stops working on its next request."
        await sessions.set_flash(db_session, who.session_id, message)
        await db_session.commit()
        return Redirect(f"/admin/dashboard/tenants/{key.tenant_id}", status_code=303)


def _sign_in(request: Request[Any, Any, Any], _: Exception) -> Response[Any]:
    return Redirect("/admin/login", status_code=303)


def _error_page(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Errors on dashboard pages are pages too, not the API's JSON."""
    if isinstance(exc, GatewayError):
        status, message, headers = exc.status_code, exc.message, exc.headers
    elif isinstance(exc, HTTPException):
        status, message, headers = exc.status_code, exc.detail, dict(exc.headers or {})
    else:  # not registered for other types; kept total for the type checker
        status, message, headers = 500, "Something went wrong.", {}
    return page(request, "error.html", status_code=status, headers=headers, status=status, message=message)


def dashboard_routes(settings: Settings) -> list[Router]:
    """The dashboard's pages (behind the session cookie) and its static files (not)."""
    pages = Router(
        path="/admin",
        route_handlers=[
            SignInController,
            DashboardController,
            AccountController,
            TenantActions,
            BillingController,
            OperatorsController,
            applications.ApplicationsController,
        ],
        exception_handlers={session.SignInRequired: _sign_in, GatewayError: _error_page, HTTPException: _error_page},
        include_in_schema=False,
    )
    static = create_static_files_router(path=STATIC, directories=[HERE / "static"], include_in_schema=False)
    return [pages, static]


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    def register(engine: JinjaTemplateEngine) -> None:
        engine.engine.filters.update(FILTERS)

    console = HERE.parent / "console" / "templates"  # the console's pages: console/*.html
    return TemplateConfig(directory=[HERE / "templates", console], engine=JinjaTemplateEngine, engine_callback=register)
