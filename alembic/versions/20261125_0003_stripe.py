"""stripe: each account's $0 pay-as-you-go subscription, and an index for the outbox worker's due rows

Revision ID: 20261125_0003
Revises: 20261125_0002
Create Date: 2026-11-26 09:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = "20261125_0003"
down_revision: str | None = "20261125_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "billing_accounts",
        sa.Column("stripe_subscription_id", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
    )
    op.create_index(
        "ix_stripe_outbox_due",
        "stripe_outbox",
        ["next_attempt_at"],
        unique=False,
        postgresql_where=sa.text("status = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index("ix_stripe_outbox_due", table_name="stripe_outbox")
    op.drop_column("billing_accounts", "stripe_subscription_id")
