"""Tenants signing themselves up, and operators approving or rejecting the applications. Knows nothing of HTTP.

SIGNUP_MODE decides what a sign-up makes: nothing (closed), a pending tenant and its owner (approval), or an
active tenant with its billing account and trial tokens (open). A pending tenant gets its billing account — and
with it the trial tokens — when an operator approves it, in the approval's transaction with its audit row. Each
sign-up, refused or not, writes an audit row; the successful ones from an address are counted there for the
per-address limit (no table of its own: the audit log already says who signed up from where, and when).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from billing import ledger
from gateway.audit import service as audit
from gateway.audit.models import AuditEntry
from gateway.audit.service import Actor
from gateway.auth import service as auth
from gateway.auth.models import Tenant, TenantStatus
from gateway.db import transaction
from gateway.errors import Conflict, GatewayError, InvalidRequest, NotFound
from gateway.people import passwords
from gateway.people import service as people
from gateway.people.errors import EmailTaken, SignupClosed, SignupThrottled, TenantNotActive
from gateway.people.models import User
from gateway.settings import Settings
from gateway.timeutil import utcnow

SIGNUP = "tenant.signup"
_AUDIT = AuditEntry.__table__  # type: ignore[attr-defined]


def terms(settings: Settings) -> ledger.AccountDefaults:
    """The billing terms a new tenant's account opens with (BILLING_*)."""
    b = settings.billing
    return ledger.AccountDefaults(b.default_mode, b.trial_tokens, b.currency, b.period)


async def sign_up(
    session: AsyncSession,
    *,
    mode: str,
    name: str,
    email: str,
    password: str,
    ip: str | None,
    per_hour: int,
    terms: ledger.AccountDefaults,
) -> User:
    """A new tenant and its owner user, as SIGNUP_MODE says; committed with its audit row. A refusal (closed,
    throttled, a bad or taken e-mail, a weak password) creates nothing and is audited."""
    account = email.strip().lower()[:254] or "(no e-mail)"
    try:
        if mode == "closed":
            raise SignupClosed("Sign-up is closed. Ask the operator for an account.")
        await _unless_throttled(session, ip, per_hour)
        email = people.normalize_email(email)
        name = name.strip()
        if not name or len(name) > 200:
            raise InvalidRequest("Enter a name (up to 200 characters).", param="name")
        passwords.check_policy(password)
        if await people.find_by_email(session, email) is not None:
            raise EmailTaken(f"There is already an account for {email}.", param="email")
        status = TenantStatus.ACTIVE if mode == "open" else TenantStatus.PENDING
        async with transaction(session):
            tenant = await auth.create_tenant(session, email)  # the e-mail is unique, so is the name
            tenant.status = status.value
            user = await people.create_tenant_user(
                session, tenant_id=tenant.id, email=email, name=name, password=password
            )
            conn = await session.connection()
            if status is TenantStatus.ACTIVE:
                await ledger.open_account(conn, tenant.id, terms.mode, terms.trial_tokens, terms.currency)
            detail = {"mode": mode, "status": status.value, "email": email, "user_id": user.id}
            await audit.record(conn, Actor(f"user:{email}", ip), SIGNUP, tenant.id, detail)
        return user
    except GatewayError as exc:
        await session.rollback()
        async with transaction(session):
            refused: dict[str, Any] = {"reason": exc.code, "mode": mode}
            await audit.record(
                await session.connection(), Actor(f"user:{account}", ip), "signup.refused", None, refused
            )
        raise


async def _unless_throttled(session: AsyncSession, ip: str | None, per_hour: int) -> None:
    if ip is None:
        return
    since = utcnow() - timedelta(hours=1)
    stmt = sa.select(sa.func.count()).where(_AUDIT.c.action == SIGNUP, _AUDIT.c.ip == ip, _AUDIT.c.at > since)
    done = (await session.execute(stmt)).scalar_one()
    if done >= per_hour:
        raise SignupThrottled()


async def decide(
    session: AsyncSession, actor: Actor, tenant_id: str, *, approve: bool, terms: ledger.AccountDefaults
) -> Tenant:
    """Approve (active, with its billing account and trial tokens) or reject a pending tenant; one transaction
    with the audit row. NotFound for an unknown tenant, Conflict for one that is not pending."""
    async with transaction(session):
        stmt = select(Tenant).where(Tenant.id == tenant_id).with_for_update()
        tenant = (await session.exec(stmt)).first()
        if tenant is None:
            raise NotFound(f"No tenant {tenant_id!r}.", param="tenant_id")
        if tenant.status != TenantStatus.PENDING:
            raise Conflict(f"Tenant {tenant_id!r} is {tenant.status}, not pending.", code="not_pending")
        tenant.status = (TenantStatus.ACTIVE if approve else TenantStatus.REJECTED).value
        session.add(tenant)
        await session.flush()
        conn = await session.connection()
        detail: dict[str, Any] = {"name": tenant.name}
        if approve:
            await ledger.open_account(conn, tenant.id, terms.mode, terms.trial_tokens, terms.currency)
            detail |= {"billing_mode": terms.mode, "trial_tokens": terms.trial_tokens}
        await audit.record(conn, actor, "tenant.approve" if approve else "tenant.reject", tenant.id, detail)
    return tenant


async def check_tenant_active(session: AsyncSession, tenant_id: str) -> None:
    """TenantNotActive (saying why) unless the tenant may use the console."""
    tenant = await session.get(Tenant, tenant_id)
    if tenant is None:
        raise TenantNotActive("This account no longer exists.")
    if tenant.status == TenantStatus.PENDING:
        raise TenantNotActive("Your application is waiting for an operator's approval. Try again once approved.")
    if tenant.status == TenantStatus.REJECTED:
        raise TenantNotActive("Your application was not approved, so this account cannot sign in.")
    if tenant.suspended_at is not None:
        raise TenantNotActive("This account is suspended by the operator, so it cannot sign in. Contact them.")
