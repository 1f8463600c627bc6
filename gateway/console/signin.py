"""The console's sign-up, sign-in and sign-out. Every sign-in opens a new server-side session; failures are
slowed down and audited (gateway/people/signin.py); a pending, rejected or suspended tenant is told why."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.response import Redirect, Template
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.audit.service import client_ip
from gateway.console import session
from gateway.console.pages import page
from gateway.dashboard.pages import Form
from gateway.errors import GatewayError
from gateway.people import signin, signup, web
from gateway.people.errors import (
    AccountDisabled,
    InvalidCredentials,
    SignInThrottled,
    TenantNotActive,
    WrongAccountKind,
)
from gateway.settings import Settings

_REFUSED = (InvalidCredentials, AccountDisabled, WrongAccountKind, SignInThrottled, TenantNotActive)


class ConsoleSignInController(Controller):
    """The only console pages that need no session."""

    @get("/signup", include_in_schema=False)
    async def signup_form(self, request: Request[Any, Any, Any], settings: Settings) -> Template:
        return page(request, "signup.html", mode=settings.signup.mode)

    @post("/signup", include_in_schema=False, status_code=200)
    async def sign_up(
        self, request: Request[Any, Any, Any], data: Form, settings: Settings, db_session: AsyncSession
    ) -> Template:
        name, email = data.get("name", ""), data.get("email", "")
        try:
            await signup.sign_up(
                db_session, mode=settings.signup.mode, name=name, email=email, password=data.get("password", ""),
                ip=client_ip(request), per_hour=settings.signup.per_address_per_hour, terms=signup.terms(settings),
            )  # fmt: skip
        except GatewayError as exc:
            return page(request, "signup.html", status_code=exc.status_code, headers=exc.headers, error=exc.message,
                        field=exc.param, name=name, email=email, mode=settings.signup.mode)  # fmt: skip
        return page(request, "signed_up.html", email=email.strip().lower(), mode=settings.signup.mode)

    @get("/login", include_in_schema=False)
    async def login_form(self, request: Request[Any, Any, Any], settings: Settings) -> Template | Redirect:
        if await session.current(request) is not None:
            return Redirect("/console", status_code=303)
        return page(request, "login.html", mode=settings.signup.mode)

    @post("/login", include_in_schema=False, status_code=303)
    async def login(
        self, request: Request[Any, Any, Any], data: Form, settings: Settings, db_session: AsyncSession
    ) -> Template | Redirect:
        # The password travels in the body only, never in a URL, and is never logged.
        try:
            done = await signin.with_password(
                db_session, web.policy(settings.sessions), email=data.get("email", ""),
                password=data.get("password", ""), ip=client_ip(request), operator=False,
                replacing=web.token(session.AREA, request) or None,
            )  # fmt: skip
        except _REFUSED as exc:
            return page(request, "login.html", status_code=exc.status_code, headers=exc.headers, error=exc.message,
                        email=data.get("email", ""), mode=settings.signup.mode)  # fmt: skip
        return Redirect("/console", status_code=303, cookies=[web.session_cookie(session.AREA, request, done.token)])

    @post("/logout", include_in_schema=False, status_code=303)
    async def logout(self, request: Request[Any, Any, Any], db_session: AsyncSession) -> Redirect:
        if token := web.token(session.AREA, request):
            await signin.sign_out(db_session, token)
        return Redirect("/console/login", status_code=303, cookies=[web.cleared_cookie(session.AREA, request)])
