"""sign-up: a tenant's status (pending applications, rejections), API key scopes, playground usage rows

Revision ID: 20261207_0013
Revises: 20261207_0012
Create Date: 2026-12-08 00:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "20261207_0013"
down_revision: str | None = "20261207_0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ALL_SCOPES = "'{inference,deployments,keys,billing}'"


def upgrade() -> None:
    # Existing tenants were made by an operator: active. Existing keys keep every right they had.
    op.add_column("tenants", sa.Column("status", sa.Text(), nullable=False, server_default="active"))
    op.create_check_constraint("ck_tenants_status", "tenants", "status IN ('pending', 'active', 'rejected')")
    op.create_index("ix_tenants_status", "tenants", ["status"])
    op.add_column(
        "api_keys",
        sa.Column("scopes", postgresql.ARRAY(sa.Text()), nullable=False, server_default=sa.text(ALL_SCOPES)),
    )
    # Which door a metered call came through: the API, or the console's playground.
    op.add_column("usage_records", sa.Column("source", sa.Text(), nullable=False, server_default="api"))
    op.create_check_constraint("ck_usage_records_source", "usage_records", "source IN ('api', 'playground')")


def downgrade() -> None:
    op.drop_constraint("ck_usage_records_source", "usage_records", type_="check")
    op.drop_column("usage_records", "source")
    op.drop_column("api_keys", "scopes")
    op.drop_index("ix_tenants_status", table_name="tenants")
    op.drop_constraint("ck_tenants_status", "tenants", type_="check")
    op.drop_column("tenants", "status")
