"""The people service against the real PostgreSQL (no HTTP, no engine): tenant users, e-mail uniqueness,
sign-in outcomes, and the sessions a password reset ends."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway import db
from gateway.auth import service as auth
from gateway.errors import InvalidRequest
from gateway.people import service as people
from gateway.people import sessions, signin
from gateway.people.errors import (
    AccountDisabled,
    EmailTaken,
    InvalidCredentials,
    InvalidEmail,
    WeakPassword,
    WrongAccountKind,
)
from gateway.people.sessions import SessionPolicy
from gateway.people.signin import SignInPolicy
from gateway.people.throttle import ThrottlePolicy
from gateway.settings import DatabaseSettings

PASSWORD = "correct horse battery staple"
POLICY = SignInPolicy(
    sessions=SessionPolicy(idle=timedelta(minutes=60), lifetime=timedelta(hours=12)),
    throttle=ThrottlePolicy(per_account=5, per_address=1000, window=timedelta(minutes=15)),
)


@pytest.fixture(scope="module")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    e = db.create_engine(DatabaseSettings(url=database_url))
    yield e
    await e.dispose()


@pytest.fixture
async def session(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    async with async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)() as s:
        yield s


def email() -> str:
    return f"u-{secrets.token_hex(4)}@example.com"


async def test_a_tenants_first_user_is_its_owner_and_the_next_are_members(session: AsyncSession) -> None:
    tenant = await auth.create_tenant(session, f"people-{secrets.token_hex(4)}")
    first = await people.create_tenant_user(
        session, tenant_id=tenant.id, email=email(), name="First", password=PASSWORD
    )
    second = await people.create_tenant_user(session, tenant_id=tenant.id, email=email(), name="Second",
                                             password=PASSWORD)  # fmt: skip
    await session.commit()
    assert (first.role, second.role) == ("owner", "member")
    assert first.tenant_id == tenant.id and not first.is_operator
    assert first.password_hash.startswith("$argon2id$")


async def test_emails_are_unique_in_any_case_across_operators_and_tenant_users(session: AsyncSession) -> None:
    address = email()
    await people.create_operator(session, email=address, name="Op", password=PASSWORD, role="viewer")
    await session.commit()
    tenant = await auth.create_tenant(session, f"people-{secrets.token_hex(4)}")
    with pytest.raises(EmailTaken):
        await people.create_tenant_user(session, tenant_id=tenant.id, email=f"  {address.upper()} ", name="T",
                                        password=PASSWORD)  # fmt: skip
    await session.rollback()
    for bad_email, bad_password, error in (("not-an-email", PASSWORD, InvalidEmail), (email(), "short", WeakPassword)):
        with pytest.raises(error):
            await people.create_operator(session, email=bad_email, name="X", password=bad_password, role="owner")
    with pytest.raises(InvalidRequest):
        await people.create_operator(session, email=email(), name="X", password=PASSWORD, role="superuser")


async def test_sign_in_outcomes(session: AsyncSession) -> None:
    operator = await people.create_operator(session, email=email(), name="Op", password=PASSWORD, role="owner")
    tenant = await auth.create_tenant(session, f"people-{secrets.token_hex(4)}")
    user = await people.create_tenant_user(session, tenant_id=tenant.id, email=email(), name="U", password=PASSWORD)
    await session.commit()
    done = await signin.with_password(session, POLICY, email=user.email, password=PASSWORD, ip=None, operator=False)
    assert done.user is not None and done.user.id == user.id
    principal = await sessions.resolve(session, done.token, POLICY.sessions, admin_token=None)
    assert principal is not None and principal.actor == f"user:{user.email}" and principal.role == "owner"
    # A tenant user at the operators' door (and back): told where to go, once the password was right.
    with pytest.raises(WrongAccountKind):
        await signin.with_password(session, POLICY, email=user.email, password=PASSWORD, ip=None, operator=True)
    with pytest.raises(WrongAccountKind):
        await signin.with_password(session, POLICY, email=operator.email, password=PASSWORD, ip=None, operator=False)
    with pytest.raises(InvalidCredentials):
        await people.authenticate(session, operator.email, "wrong password here")
    await people.disable(session, operator.id)
    await session.commit()
    with pytest.raises(AccountDisabled):
        await people.authenticate(session, operator.email, PASSWORD)
    with pytest.raises(InvalidCredentials):  # disabled is told only to whoever knows the password
        await people.authenticate(session, operator.email, "wrong password here")


async def test_a_reset_password_ends_every_session_of_the_user_only(session: AsyncSession) -> None:
    a = await people.create_operator(session, email=email(), name="A", password=PASSWORD, role="owner")
    b = await people.create_operator(session, email=email(), name="B", password=PASSWORD, role="owner")
    tokens = [await sessions.start(session, POLICY.sessions, user=u) for u in (a, a, b)]
    await session.commit()
    await people.reset_password(session, a.id, "a brand new pass phrase")
    await session.commit()
    alive = [await sessions.resolve(session, t, POLICY.sessions, admin_token=None) is not None for t in tokens]
    assert alive == [False, False, True]
    assert (await people.authenticate(session, a.email, "a brand new pass phrase")).id == a.id
    # An admin-token session ends when the token changes.
    token = await sessions.start(session, POLICY.sessions, admin_token="t" * 40)
    await session.commit()
    assert await sessions.resolve(session, token, POLICY.sessions, admin_token="t" * 40) is not None
    assert await sessions.resolve(session, token, POLICY.sessions, admin_token="u" * 40) is None
