"""Operator users on the dashboard: everyone sees the list; owners create operators, reset their passwords,
disable and enable them. The people service makes the change; its audit row commits with it."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.response import Redirect, Template
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.audit import service as audit
from gateway.audit.service import Actor
from gateway.dashboard import session
from gateway.dashboard.actions import forms
from gateway.dashboard.pages import Form, page
from gateway.errors import InvalidRequest, NotFound
from gateway.people import service as people
from gateway.people.models import OperatorRole, User

PAGE = "/admin/dashboard/operators"


async def operators_page(request: Request[Any, Any, Any], db: AsyncSession, **extra: Any) -> Template:
    rows = await people.list_operators(db)
    return page(request, "operators.html", operators=rows, roles=[r.value for r in OperatorRole], **extra)


async def _operator(db: AsyncSession, user_id: str) -> User:
    user = await people.get(db, user_id)
    if not user.is_operator:  # a tenant's user is not managed here
        raise NotFound(f"No operator {user_id!r}.", param="user_id")
    return user


async def _commit(db: AsyncSession, actor: Actor, action: str, user: User, detail: dict[str, Any]) -> None:
    """The change (already in the session) and its audit row, one commit."""
    await audit.record(await db.connection(), actor, action, user.id, {"email": user.email, **detail})
    await db.commit()


class OperatorsController(Controller):
    path = "/dashboard/operators"
    guards = [session.require_session]

    @get("/", include_in_schema=False)
    async def operators(self, request: Request[Any, Any, Any], db_session: AsyncSession) -> Template:
        return await operators_page(request, db_session)

    @post("/", include_in_schema=False, status_code=303, guards=[session.may_manage_operators])
    async def create(
        self, request: Request[Any, Any, Any], data: Form, db_session: AsyncSession
    ) -> Redirect | Template:
        who, actor = await forms.operator(request)
        try:
            fields = {k: data.get(k, "") for k in ("email", "name", "password", "role")}
            user = await people.create_operator(db_session, **fields)
            await _commit(db_session, actor, "operator.create", user, {"role": user.role})
        except forms.REFUSALS as exc:
            await db_session.rollback()
            return await operators_page(request, db_session, **forms.refusal(exc))
        return await forms.done(db_session, who, f"Operator {user.email} ({user.role}) created.", PAGE)

    @post("/{user_id:str}/password", include_in_schema=False, status_code=303, guards=[session.may_manage_operators])
    async def reset_password(
        self, request: Request[Any, Any, Any], user_id: str, data: Form, db_session: AsyncSession
    ) -> Redirect | Template:
        who, actor = await forms.operator(request)
        try:
            user = await people.reset_password(db_session, (await _operator(db_session, user_id)).id,
                                               data.get("password", ""))  # fmt: skip
            await _commit(db_session, actor, "user.password_reset", user, {})
        except forms.REFUSALS as exc:
            await db_session.rollback()
            return await operators_page(request, db_session, **forms.refusal(exc))
        return await forms.done(db_session, who, f"New password set for {user.email}; its sessions are signed out.",
                                PAGE)  # fmt: skip

    @post("/{user_id:str}/disable", include_in_schema=False, status_code=303, guards=[session.may_manage_operators])
    async def disable(
        self, request: Request[Any, Any, Any], user_id: str, db_session: AsyncSession
    ) -> Redirect | Template:
        who, actor = await forms.operator(request)
        try:
            if user_id == who.user_id:
                raise InvalidRequest("You cannot disable yourself.", param="user_id")
            user = await people.disable(db_session, (await _operator(db_session, user_id)).id)
            await _commit(db_session, actor, "user.disable", user, {})
        except forms.REFUSALS as exc:
            await db_session.rollback()
            return await operators_page(request, db_session, **forms.refusal(exc))
        return await forms.done(db_session, who, f"{user.email} is disabled; its sessions are signed out.", PAGE)

    @post("/{user_id:str}/enable", include_in_schema=False, status_code=303, guards=[session.may_manage_operators])
    async def enable(self, request: Request[Any, Any, Any], user_id: str, db_session: AsyncSession) -> Redirect:
        who, actor = await forms.operator(request)
        user = await people.enable(db_session, (await _operator(db_session, user_id)).id)  # NotFound: error page
        await _commit(db_session, actor, "user.enable", user, {})
        return await forms.done(db_session, who, f"{user.email} may sign in again.", PAGE)
