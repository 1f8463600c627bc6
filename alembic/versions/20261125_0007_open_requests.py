"""open requests: a row per admitted request until its usage is committed; gateway instances with heartbeats

Revision ID: 20261125_0007
Revises: 20261125_0006
Create Date: 2026-11-26 00:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = "20261125_0007"
down_revision: str | None = "20261125_0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_S = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "gateway_instances",
        sa.Column("id", _S(length=40), nullable=False),
        sa.Column("host", _S(length=200), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_gateway_instances_expires_at", "gateway_instances", ["expires_at"])
    op.create_table(
        "open_requests",
        sa.Column("request_id", _S(length=40), nullable=False),
        sa.Column("instance_id", _S(length=40), nullable=False),
        sa.Column("tenant_id", _S(length=40), nullable=False),
        sa.Column("api_key_id", _S(length=40), nullable=False),
        sa.Column("model", _S(length=200), nullable=False),
        sa.Column("base_model", _S(length=200), nullable=False),
        sa.Column("adapter_id", _S(length=40), nullable=True),
        sa.Column("endpoint", _S(length=40), nullable=False),
        sa.Column("stream", sa.Boolean(), nullable=False),
        sa.Column("reserved_trial_tokens", sa.BigInteger(), nullable=False),
        sa.Column("reserved_micros", sa.BigInteger(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("checkpoint_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["adapter_id"], ["adapters.id"]),
        sa.ForeignKeyConstraint(["api_key_id"], ["api_keys.id"]),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"]),
        sa.PrimaryKeyConstraint("request_id"),
    )
    op.create_index("ix_open_requests_tenant", "open_requests", ["tenant_id"])
    op.create_index("ix_open_requests_key", "open_requests", ["api_key_id"])
    op.create_index("ix_open_requests_instance", "open_requests", ["instance_id"])


def downgrade() -> None:
    op.drop_table("open_requests")
    op.drop_table("gateway_instances")
