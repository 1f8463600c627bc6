"""payments: card on file, top-ups and auto-recharge, Stripe events, notices, disputes, dunning columns

Revision ID: 20261207_0012
Revises: 20261207_0011
Create Date: 2026-12-07 23:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "20261207_0012"
down_revision: str | None = "20261207_0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _tz(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    add = op.add_column
    add("billing_accounts", sa.Column("stripe_payment_method_id", sa.String(100), nullable=True))
    add("billing_accounts", sa.Column("auto_recharge_enabled", sa.Boolean, nullable=False, server_default=sa.false()))
    add("billing_accounts", sa.Column("auto_recharge_threshold", sa.BigInteger, nullable=False, server_default="0"))
    add("billing_accounts", sa.Column("auto_recharge_amount", sa.BigInteger, nullable=False, server_default="0"))
    add("billing_accounts", sa.Column("auto_recharge_count", sa.Integer, nullable=False, server_default="0"))
    add("billing_accounts", sa.Column("auto_recharge_pending", sa.String(120), nullable=True))
    add("billing_accounts", sa.Column("auto_recharge_error", sa.String(1000), nullable=True))
    add("billing_accounts", _tz("auto_recharge_error_at", nullable=True))
    add("tenants", sa.Column("suspended_reason", sa.String(40), nullable=True))
    add("invoices", sa.Column("collection_method", sa.String(30), nullable=True))
    add("invoices", _tz("due_at", nullable=True))
    add("invoices", sa.Column("dunning", sa.String(20), nullable=True))
    add("invoices", sa.Column("payment_error", sa.String(1000), nullable=True))
    op.create_index("ix_invoices_overdue", "invoices", ["due_at"], postgresql_where=sa.text("status = 'open'"))
    op.create_table(
        "stripe_payments",
        sa.Column("id", sa.String(100), primary_key=True),
        sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), nullable=False, index=True),
        sa.Column("purpose", sa.String(20), nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(40), nullable=False),
        sa.Column("amount_received", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("credited", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("refunded_minor", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("error", sa.String(1000), nullable=True),
        _tz("created_at"),
        _tz("updated_at"),
    )
    op.create_table(
        "stripe_events",
        sa.Column("id", sa.String(100), primary_key=True),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("handled", sa.String(40), nullable=True),
        _tz("received_at"),
    )
    op.create_table(
        "billing_notices",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("message", sa.String(1000), nullable=False),
        sa.Column("ref", sa.String(100), nullable=True),
        _tz("created_at"),
    )
    op.create_index("ix_billing_notices_tenant", "billing_notices", ["tenant_id", "id"])
    op.create_table(
        "stripe_disputes",
        sa.Column("id", sa.String(100), primary_key=True),
        sa.Column("tenant_id", sa.String(40), nullable=True, index=True),
        sa.Column("charge_id", sa.String(100), nullable=True),
        sa.Column("payment_intent_id", sa.String(100), nullable=True),
        sa.Column("amount_minor", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("reason", sa.String(100), nullable=True),
        sa.Column("status", sa.String(40), nullable=True),
        _tz("created_at"),
    )


def downgrade() -> None:
    for table in ("stripe_disputes", "billing_notices", "stripe_events", "stripe_payments"):
        op.drop_table(table)
    op.drop_index("ix_invoices_overdue", table_name="invoices")
    for column in ("payment_error", "dunning", "due_at", "collection_method"):
        op.drop_column("invoices", column)
    op.drop_column("tenants", "suspended_reason")
    for column in ("auto_recharge_error_at", "auto_recharge_error", "auto_recharge_pending", "auto_recharge_count",
                   "auto_recharge_amount", "auto_recharge_threshold", "auto_recharge_enabled",
                   "stripe_payment_method_id"):  # fmt: skip
        op.drop_column("billing_accounts", column)
