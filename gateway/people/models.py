"""Tables of users, their server-side sessions, and failed sign-ins."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from gateway.timeutil import tz_field


class OperatorRole(StrEnum):
    """What an operator user may do on the dashboard (see gateway.people.roles)."""

    OWNER = "owner"
    BILLING = "billing"
    VIEWER = "viewer"


class TenantRole(StrEnum):
    OWNER = "owner"  # the tenant's first user
    MEMBER = "member"


class User(SQLModel, table=True):
    """An operator (no tenant) or a tenant's user. E-mails are stored lower-case and unique across both kinds."""

    __tablename__ = "users"
    __table_args__ = (
        sa.Index("ux_users_email_lower", sa.text("lower(email)"), unique=True),
        sa.CheckConstraint(
            "(tenant_id IS NULL AND role IN ('owner', 'billing', 'viewer'))"
            " OR (tenant_id IS NOT NULL AND role IN ('owner', 'member'))",
            name="ck_users_role",
        ),
    )

    id: str = Field(primary_key=True, max_length=40)
    email: str = Field(max_length=254)
    name: str = Field(max_length=200)
    password_hash: str = Field(max_length=200, description="argon2id, in its PHC string form")
    tenant_id: str | None = Field(default=None, foreign_key="tenants.id", index=True, max_length=40)
    role: str = Field(max_length=20)
    created_at: datetime = tz_field(default_now=True)
    disabled_at: datetime | None = tz_field(nullable=True)

    @property
    def is_operator(self) -> bool:
        return self.tenant_id is None


class WebSession(SQLModel, table=True):
    """A signed-in browser. The cookie holds a random 256-bit token; only its SHA-256 is stored here."""

    __tablename__ = "sessions"
    __table_args__ = (
        sa.CheckConstraint(
            "(principal = 'user' AND user_id IS NOT NULL) OR (principal = 'admin-token' AND user_id IS NULL)",
            name="ck_sessions_principal",
        ),
    )

    id: str = Field(primary_key=True, max_length=64, description="sha256 hex of the cookie's token")
    principal: str = Field(max_length=20, description="'user' or 'admin-token'")
    user_id: str | None = Field(default=None, foreign_key="users.id", index=True, max_length=40, ondelete="CASCADE")
    admin_token_hash: str | None = Field(
        default=None, max_length=64, description="for 'admin-token' sessions: which token; a new token ends them"
    )
    created_at: datetime = tz_field(default_now=True)
    last_seen_at: datetime = tz_field(default_now=True)
    expires_at: datetime = tz_field()
    revoked_at: datetime | None = tz_field(nullable=True)
    ip: str | None = Field(default=None, max_length=64)
    flash: str | None = Field(default=None, max_length=500, description="a message for the next page shown")


class SignInFailure(SQLModel, table=True):
    """One failed sign-in, counted per account and per client address while it is recent."""

    __tablename__ = "signin_failures"
    __table_args__ = (
        sa.Index("ix_signin_failures_account_at", "account", "at"),
        sa.Index("ix_signin_failures_ip_at", "ip", "at"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=sa.BigInteger)
    at: datetime = tz_field(default_now=True, index=True)
    account: str | None = Field(default=None, max_length=254, description="the e-mail tried, or 'admin-token'")
    ip: str | None = Field(default=None, max_length=64)
