"""rate limits: per-tenant and per-key limits, per-minute counters shared by all gateway processes

Revision ID: 20261125_0005
Revises: 20261125_0004
Create Date: 2026-11-25 22:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = "20261125_0005"
down_revision: str | None = "20261125_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("tenants", "api_keys"):
        op.add_column(table, sa.Column("rpm_limit", sa.Integer(), nullable=True))
        op.add_column(table, sa.Column("tpm_limit", sa.BigInteger(), nullable=True))
        op.add_column(table, sa.Column("max_concurrent_requests", sa.Integer(), nullable=True))
    op.create_table(
        "rate_counters",
        sa.Column("subject", sqlmodel.sql.sqltypes.AutoString(length=60), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("subject", "window_start"),
    )


def downgrade() -> None:
    op.drop_table("rate_counters")
    for table in ("api_keys", "tenants"):
        op.drop_column(table, "max_concurrent_requests")
        op.drop_column(table, "tpm_limit")
        op.drop_column(table, "rpm_limit")
