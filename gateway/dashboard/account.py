"""The signed-in operator's own account: change the password (which signs every other browser out)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.response import Redirect, Template
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.audit import service as audit
from gateway.audit.service import Actor, client_ip
from gateway.dashboard import session
from gateway.dashboard.pages import Form, page
from gateway.errors import InvalidRequest
from gateway.people import service as people
from gateway.people import sessions, web
from gateway.people.errors import InvalidCredentials, WeakPassword
from gateway.settings import Settings


class AccountController(Controller):
    path = "/dashboard/account"
    guards = [session.require_session]

    @get("/", include_in_schema=False)
    async def account(self, request: Request[Any, Any, Any]) -> Template:
        return page(request, "account.html")

    @post("/password", include_in_schema=False, status_code=303)
    async def change_password(
        self, request: Request[Any, Any, Any], data: Form, settings: Settings, db_session: AsyncSession,
        db_engine: AsyncEngine,
    ) -> Template | Redirect:  # fmt: skip
        who = await web.current(session.AREA, request)
        assert who is not None  # the guard let only a signed-in operator through
        if who.user_id is None:
            raise InvalidRequest("The admin token has no password: change GATEWAY_ADMIN_TOKEN instead.")
        new = data.get("new_password", "")
        try:
            if new != data.get("confirm_password", ""):
                raise WeakPassword("The two new passwords differ.", param="confirm_password")
            user = await people.change_password(db_session, who.user_id, data.get("current_password", ""), new)
        except (InvalidCredentials, WeakPassword) as exc:
            await db_session.rollback()
            return page(request, "account.html", status_code=exc.status_code, error=exc.message)
        # Every session of the user ended with the change; this browser gets a new one.
        token = await sessions.start(
            db_session, web.policy(settings.sessions).sessions, user=user, ip=client_ip(request),
            flash="Password changed. Every other session of yours was signed out.",
        )  # fmt: skip
        actor = Actor(who.actor, client_ip(request))
        await audit.record(await db_session.connection(), actor, "user.password_change", user.id, None)
        await db_session.commit()  # the new password, the new session and the audit row together
        cookie = web.session_cookie(session.AREA, request, token)
        return Redirect("/admin/dashboard/account", status_code=303, cookies=[cookie])
