"""The dashboard's sign-in and sign-out: an operator's e-mail and password, or the admin token (the first
owner's way in). Every sign-in opens a new server-side session; failures are slowed down and audited."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.response import Redirect, Template
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.audit.service import client_ip
from gateway.dashboard import session
from gateway.dashboard.pages import Form, page
from gateway.people import signin, web
from gateway.people.errors import AccountDisabled, InvalidCredentials, SignInThrottled, WrongAccountKind
from gateway.settings import Settings

_REFUSED = (InvalidCredentials, AccountDisabled, WrongAccountKind, SignInThrottled)


class SignInController(Controller):
    """The only dashboard pages that need no session."""

    @get("/login", include_in_schema=False)
    async def login_form(self, request: Request[Any, Any, Any], settings: Settings) -> Template | Redirect:
        if await web.current(session.AREA, request) is not None:
            return Redirect("/admin", status_code=303)
        return page(request, "login.html", token_enabled=settings.admin.token is not None)

    @post("/login", include_in_schema=False, status_code=303)
    async def login(
        self, request: Request[Any, Any, Any], data: Form, settings: Settings, db_session: AsyncSession
    ) -> Template | Redirect:
        # The secrets travel in the body only, never in a URL; none of them is logged.
        policy = web.policy(settings.sessions)
        ip, replacing = client_ip(request), web.token(session.AREA, request) or None
        admin_token = settings.admin.token.get_secret_value() if settings.admin.token is not None else None
        try:
            if "token" in data:
                done = await signin.with_admin_token(db_session, policy, candidate=data["token"],
                                                     expected=admin_token, ip=ip, replacing=replacing)  # fmt: skip
            else:
                done = await signin.with_password(
                    db_session, policy, email=data.get("email", ""), password=data.get("password", ""), ip=ip,
                    operator=True, replacing=replacing,
                )  # fmt: skip
        except _REFUSED as exc:
            return page(request, "login.html", status_code=exc.status_code, headers=exc.headers, error=exc.message,
                        email=data.get("email", ""), token_enabled=admin_token is not None)  # fmt: skip
        return Redirect("/admin", status_code=303, cookies=[web.session_cookie(session.AREA, request, done.token)])

    @post("/logout", include_in_schema=False, status_code=303)
    async def logout(self, request: Request[Any, Any, Any], db_session: AsyncSession) -> Redirect:
        if token := web.token(session.AREA, request):
            await signin.sign_out(db_session, token)
        return Redirect("/admin/login", status_code=303, cookies=[web.cleared_cookie(session.AREA, request)])
