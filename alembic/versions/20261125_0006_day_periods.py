"""billing periods may be days: period ids up to 10 characters (YYYY-MM-DD)

Revision ID: 20261125_0006
Revises: 20261125_0005
Create Date: 2026-11-25 23:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlmodel

from alembic import op

revision: str = "20261125_0006"
down_revision: str | None = "20261125_0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("ledger_entries", "invoices"):
        op.alter_column(
            table, "period", type_=sqlmodel.sql.sqltypes.AutoString(length=10),
            existing_type=sqlmodel.sql.sqltypes.AutoString(length=7),
        )  # fmt: skip


def downgrade() -> None:
    for table in ("invoices", "ledger_entries"):
        op.alter_column(
            table, "period", type_=sqlmodel.sql.sqltypes.AutoString(length=7),
            existing_type=sqlmodel.sql.sqltypes.AutoString(length=10),
        )  # fmt: skip
