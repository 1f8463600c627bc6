"""people and sessions: operator and tenant users, server-side browser sessions, failed sign-ins

Revision ID: 20261207_0010
Revises: 20261207_0009
Create Date: 2026-12-07 23:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = "20261207_0010"
down_revision: str | None = "20261207_0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STR = sqlmodel.sql.sqltypes.AutoString
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", _STR(length=40), nullable=False),
        sa.Column("email", _STR(length=254), nullable=False),
        sa.Column("name", _STR(length=200), nullable=False),
        sa.Column("password_hash", _STR(length=200), nullable=False),
        sa.Column("tenant_id", _STR(length=40), nullable=True),
        sa.Column("role", _STR(length=20), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("disabled_at", _TS, nullable=True),
        sa.CheckConstraint(
            "(tenant_id IS NULL AND role IN ('owner', 'billing', 'viewer'))"
            " OR (tenant_id IS NOT NULL AND role IN ('owner', 'member'))",
            name="ck_users_role",
        ),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ux_users_email_lower", "users", [sa.text("lower(email)")], unique=True)
    op.create_index(op.f("ix_users_tenant_id"), "users", ["tenant_id"], unique=False)
    op.create_table(
        "sessions",
        sa.Column("id", _STR(length=64), nullable=False),
        sa.Column("principal", _STR(length=20), nullable=False),
        sa.Column("user_id", _STR(length=40), nullable=True),
        sa.Column("admin_token_hash", _STR(length=64), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("last_seen_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("revoked_at", _TS, nullable=True),
        sa.Column("ip", _STR(length=64), nullable=True),
        sa.Column("flash", _STR(length=500), nullable=True),
        sa.CheckConstraint(
            "(principal = 'user' AND user_id IS NOT NULL) OR (principal = 'admin-token' AND user_id IS NULL)",
            name="ck_sessions_principal",
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_sessions_user_id"), "sessions", ["user_id"], unique=False)
    op.create_table(
        "signin_failures",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("account", _STR(length=254), nullable=True),
        sa.Column("ip", _STR(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_signin_failures_at"), "signin_failures", ["at"], unique=False)
    op.create_index("ix_signin_failures_account_at", "signin_failures", ["account", "at"], unique=False)
    op.create_index("ix_signin_failures_ip_at", "signin_failures", ["ip", "at"], unique=False)
    # Operator audit rows name the operator by e-mail ("operator:<e-mail>"), longer than the old 100.
    op.alter_column("audit_log", "actor", type_=_STR(length=320), existing_type=_STR(length=100), nullable=False)


def downgrade() -> None:
    op.alter_column("audit_log", "actor", type_=_STR(length=100), existing_type=_STR(length=320), nullable=False)
    op.drop_table("signin_failures")
    op.drop_table("sessions")
    op.drop_table("users")
