"""tenant quotas: upload bounds per tenant; a null limit now follows the TENANT_* default, 0 is unlimited

Existing tenants keep their behaviour: their null rate limits (unlimited until now) become 0 (unlimited).

Revision ID: 20261207_0009
Revises: 20261126_0008
Create Date: 2026-12-07 22:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "20261207_0009"
down_revision: str | None = "20261126_0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_RATE = ("rpm_limit", "tpm_limit", "max_concurrent_requests")


def upgrade() -> None:
    op.add_column("tenants", sa.Column("max_deployments", sa.Integer(), nullable=True))
    op.add_column("tenants", sa.Column("max_adapter_bytes", sa.BigInteger(), nullable=True))
    op.add_column("tenants", sa.Column("uploads_per_minute", sa.Integer(), nullable=True))
    for column in _RATE:
        op.execute(f"UPDATE tenants SET {column} = 0 WHERE {column} IS NULL")


def downgrade() -> None:
    for column in _RATE:
        op.execute(f"UPDATE tenants SET {column} = NULL WHERE {column} = 0")
    op.drop_column("tenants", "uploads_per_minute")
    op.drop_column("tenants", "max_adapter_bytes")
    op.drop_column("tenants", "max_deployments")
