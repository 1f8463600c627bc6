"""fine-tuning: files, uploads, fine-tuning jobs with events and checkpoints, the job queue, training prices

Revision ID: 20261207_0011
Revises: 20261207_0010
Create Date: 2026-12-07 23:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from alembic import op
from gateway import queue

revision: str = "20261207_0011"
down_revision: str | None = "20261207_0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _tz(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _script(sql: str) -> None:
    """Several statements at once (pgqueuer's DDL has function bodies): asyncpg's simple-query protocol,
    in the migration's own transaction."""
    from sqlalchemy.util import await_only

    driver = op.get_bind().connection.dbapi_connection.driver_connection  # type: ignore[union-attr]
    await_only(driver.execute(sql))


def upgrade() -> None:
    op.create_table(
        "files",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), nullable=False, index=True),
        sa.Column("purpose", sa.String(40), nullable=False),
        sa.Column("filename", sa.String(300), nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False, index=True),
        sa.Column("examples", sa.Integer, nullable=False, server_default="0"),
        _tz("created_at"),
        _tz("deleted_at", nullable=True),
    )
    op.create_table(
        "fine_tuning_jobs",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("training_file", sa.String(40), nullable=False),
        sa.Column("validation_file", sa.String(40), nullable=True),
        sa.Column("suffix", sa.String(64), nullable=True),
        sa.Column("seed", sa.Integer, nullable=False, server_default="0"),
        sa.Column("hyperparameters", JSONB, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("fine_tuned_model", sa.String(200), nullable=True),
        sa.Column("deployment_id", sa.String(40), nullable=True),
        sa.Column("trained_tokens", sa.BigInteger, nullable=True),
        sa.Column("estimated_tokens", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("error", JSONB, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("hold_micros", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("hold_tokens", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("charged", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("trial_covers", sa.Boolean, nullable=False, server_default=sa.false()),
        _tz("created_at"),
        _tz("started_at", nullable=True),
        _tz("finished_at", nullable=True),
        _tz("estimated_finish", nullable=True),
    )
    op.create_index("ix_fine_tuning_jobs_tenant_created", "fine_tuning_jobs", ["tenant_id", "created_at", "id"])
    op.create_table(
        "fine_tuning_events",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(40), sa.ForeignKey("fine_tuning_jobs.id"), nullable=False),
        sa.Column("level", sa.String(10), nullable=False),
        sa.Column("message", sa.String(1000), nullable=False),
        sa.Column("type", sa.String(10), nullable=False),
        sa.Column("data", JSONB, nullable=True),
        _tz("created_at"),
    )
    op.create_index("ix_fine_tuning_events_job", "fine_tuning_events", ["job_id", "id"])
    op.create_table(
        "fine_tuning_checkpoints",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("job_id", sa.String(40), sa.ForeignKey("fine_tuning_jobs.id"), nullable=False, index=True),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("trained_tokens", sa.BigInteger, nullable=False),
        sa.Column("metrics", JSONB, nullable=False),
        sa.Column("path", sa.String(1000), nullable=False),
        _tz("created_at"),
        sa.UniqueConstraint("job_id", "epoch", name="uq_fine_tuning_checkpoints_epoch"),
    )
    op.create_table(
        "uploads",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), nullable=False, index=True),
        sa.Column("filename", sa.String(300), nullable=False),
        sa.Column("purpose", sa.String(40), nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("mime_type", sa.String(200), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("file_id", sa.String(40), nullable=True),
        _tz("created_at"),
        _tz("expires_at"),
    )
    op.create_table(
        "upload_parts",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("upload_id", sa.String(40), sa.ForeignKey("uploads.id"), nullable=False, index=True),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        _tz("created_at"),
    )
    op.add_column("prices", sa.Column("training_per_million", sa.BigInteger, nullable=False, server_default="0"))
    # The job queue (pgqueuer's own DDL); a later task reuses it for payment background jobs.
    _script(queue.install_sql())


def downgrade() -> None:
    _script(queue.uninstall_sql())
    op.drop_column("prices", "training_per_million")
    op.drop_table("upload_parts")
    op.drop_table("uploads")
    op.drop_table("fine_tuning_checkpoints")
    op.drop_table("fine_tuning_events")
    op.drop_table("fine_tuning_jobs")
    op.drop_table("files")
