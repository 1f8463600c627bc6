"""The admin dashboard at /admin: sign-in, overview, tenant drill-down, key revocation. Thin: parse, query, render."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from litestar import Controller, Request, Response, Router, get, post
from litestar.enums import RequestEncodingType
from litestar.exceptions import HTTPException
from litestar.params import Body, Parameter
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.admin import service as admin
from gateway.audit.service import Actor
from gateway.dashboard import charts, service, session
from gateway.dashboard.format import FILTERS
from gateway.errors import GatewayError
from gateway.settings import Settings

HERE = Path(__file__).parent
STATIC = "/admin/dashboard/static"
Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]
_HEADERS = {
    # Scripts and styles only from our own static files; no framing (the revoke button), no referrer, no caching.
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


def _page(request: Request[Any, Any, Any], name: str, status_code: int = 200, **context: Any) -> Template:
    flash = request.session.pop("flash", None) if request.scope.get("session") else None
    return Template(
        template_name=name,
        context={"static": STATIC, "csrf": session.csrf_token(request) if session.signed_in(request) else "",
                 "csrf_field": session.CSRF_FIELD, "flash": flash, **context},
        status_code=status_code,
        headers=_HEADERS,
    )  # fmt: skip


def _window(name: str) -> service.Window:
    return service.WINDOWS.get(name, service.WINDOWS["24h"])


class SignInController(Controller):
    """The only dashboard pages that need no session."""

    @get("/login", include_in_schema=False)
    async def login_form(self, request: Request[Any, Any, Any]) -> Template | Redirect:
        if session.signed_in(request):
            return Redirect("/admin", status_code=303)
        return _page(request, "login.html")

    @post("/login", include_in_schema=False, status_code=303)
    async def login(self, request: Request[Any, Any, Any], data: Form, settings: Settings) -> Template | Redirect:
        # No CSRF token here: a forged sign-in would need the admin token itself. The token travels in the body only.
        if not session.token_matches(settings, data.get("token", "")):
            disabled = settings.admin.token is None
            error = "The dashboard is disabled: set GATEWAY_ADMIN_TOKEN." if disabled else "That admin token is wrong."
            return _page(request, "login.html", status_code=401, error=error)
        session.start(request)
        return Redirect("/admin", status_code=303)


class DashboardController(Controller):
    guards = [session.require_session]

    @get("/", include_in_schema=False)
    async def overview(
        self, request: Request[Any, Any, Any], db_engine: AsyncEngine, settings: Settings,
        window: Annotated[str, Parameter(query="range")] = "24h",
    ) -> Template:  # fmt: skip
        w = _window(window)
        data = await service.overview(db_engine, w)
        currency = settings.billing.currency
        return _page(
            request, "overview.html", data=data, window=w, windows=list(service.WINDOWS), currency=currency,
            in_flight=service.in_flight(request.app.state),
            charts=charts.overview(data, w, currency),
        )  # fmt: skip

    @get("/dashboard/tenants/{tenant_id:str}", include_in_schema=False)
    async def tenant(
        self, request: Request[Any, Any, Any], tenant_id: str, db_engine: AsyncEngine,
        window: Annotated[str, Parameter(query="range")] = "7d",
    ) -> Template:  # fmt: skip
        w = _window(window)
        data = await service.tenant_page(db_engine, tenant_id, w)
        currency = data["balance"].currency
        return _page(request, "tenant.html", data=data, window=w, windows=list(service.WINDOWS), currency=currency,
                     charts=charts.tenant(data, w, currency))  # fmt: skip

    @post("/dashboard/keys/{key_id:str}/revoke", include_in_schema=False, status_code=303)
    async def revoke(
        self, request: Request[Any, Any, Any], key_id: str, data: Form, db_session: AsyncSession
    ) -> Redirect:
        session.check_csrf(request, data)
        key = await admin.revoke_key(db_session, Actor.of(request), key_id)  # NotFound if unknown or already revoked
        request.session["flash"] = f"Key {key.prefix}… revoked. It stops working on its next request."
        return Redirect(f"/admin/dashboard/tenants/{key.tenant_id}", status_code=303)

    @post("/logout", include_in_schema=False, status_code=303)
    async def logout(self, request: Request[Any, Any, Any], data: Form) -> Redirect:
        session.check_csrf(request, data)
        session.end(request)
        return Redirect("/admin/login", status_code=303)


def _sign_in(request: Request[Any, Any, Any], _: Exception) -> Response[Any]:
    return Redirect("/admin/login", status_code=303)


def _error_page(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Errors on dashboard pages are pages too, not the API's JSON."""
    if isinstance(exc, GatewayError):
        status, message = exc.status_code, exc.message
    elif isinstance(exc, HTTPException):
        status, message = exc.status_code, exc.detail
    else:  # not registered for other types; kept total for the type checker
        status, message = 500, "Something went wrong."
    return _page(request, "error.html", status_code=status, status=status, message=message)


def dashboard_routes(settings: Settings) -> list[Router]:
    """The dashboard's pages (behind the session cookie) and its static files (not)."""
    pages = Router(
        path="/admin",
        route_handlers=[SignInController, DashboardController],
        middleware=[session.session_config(settings).middleware],
        exception_handlers={session.SignInRequired: _sign_in, GatewayError: _error_page, HTTPException: _error_page},
        include_in_schema=False,
    )
    static = create_static_files_router(path=STATIC, directories=[HERE / "static"], include_in_schema=False)
    return [pages, static]


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    def register(engine: JinjaTemplateEngine) -> None:
        engine.engine.filters.update(FILTERS)

    return TemplateConfig(directory=HERE / "templates", engine=JinjaTemplateEngine, engine_callback=register)
