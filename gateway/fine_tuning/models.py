"""Tables of fine-tuning jobs, their events and their per-epoch checkpoints."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from gateway.timeutil import tz_field


class JobStatus(StrEnum):
    validating_files = "validating_files"
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


FINAL = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled})


class FineTuningJob(SQLModel, table=True):
    __tablename__ = "fine_tuning_jobs"
    __table_args__ = (sa.Index("ix_fine_tuning_jobs_tenant_created", "tenant_id", "created_at", "id"),)

    id: str = Field(primary_key=True, max_length=40)
    tenant_id: str = Field(foreign_key="tenants.id", max_length=40)
    model: str = Field(max_length=200, description="the base model")
    training_file: str = Field(max_length=40)
    validation_file: str | None = Field(default=None, max_length=40)
    suffix: str | None = Field(default=None, max_length=64)
    seed: int = Field(default=0)
    hyperparameters: dict[str, Any] = Field(default_factory=dict, sa_type=JSONB)
    status: str = Field(default=JobStatus.queued, max_length=20)
    fine_tuned_model: str | None = Field(default=None, max_length=200)
    deployment_id: str | None = Field(default=None, max_length=40)
    trained_tokens: int | None = Field(default=None, sa_type=sa.BigInteger)
    estimated_tokens: int = Field(default=0, sa_type=sa.BigInteger)
    error: dict[str, Any] | None = Field(default=None, sa_type=JSONB)
    attempts: int = Field(default=0, description="times a trainer started it (a retry resumes from a checkpoint)")
    hold_micros: int = Field(default=0, sa_type=sa.BigInteger, description="prepaid credit held until it ends")
    hold_tokens: int = Field(default=0, sa_type=sa.BigInteger, description="trial tokens held until it ends")
    charged: bool = Field(default=False)
    trial_covers: bool = Field(default=False, description="BILLING_TRIAL_COVERS_TRAINING when it was created")
    created_at: datetime = tz_field(default_now=True)
    started_at: datetime | None = tz_field(nullable=True)
    finished_at: datetime | None = tz_field(nullable=True)
    estimated_finish: datetime | None = tz_field(nullable=True)


class FineTuningEvent(SQLModel, table=True):
    __tablename__ = "fine_tuning_events"
    __table_args__ = (sa.Index("ix_fine_tuning_events_job", "job_id", "id"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=sa.BigInteger)
    job_id: str = Field(foreign_key="fine_tuning_jobs.id", max_length=40)
    level: str = Field(default="info", max_length=10)
    message: str = Field(max_length=1000)
    type: str = Field(default="message", max_length=10, description="message | metrics")
    data: dict[str, Any] | None = Field(default=None, sa_type=JSONB)
    created_at: datetime = tz_field(default_now=True)


class FineTuningCheckpoint(SQLModel, table=True):
    __tablename__ = "fine_tuning_checkpoints"
    __table_args__ = (sa.UniqueConstraint("job_id", "epoch", name="uq_fine_tuning_checkpoints_epoch"),)

    id: str = Field(primary_key=True, max_length=40)
    job_id: str = Field(foreign_key="fine_tuning_jobs.id", max_length=40, index=True)
    epoch: int
    step: int
    trained_tokens: int = Field(sa_type=sa.BigInteger)
    metrics: dict[str, Any] = Field(default_factory=dict, sa_type=JSONB)
    path: str = Field(max_length=1000)
    created_at: datetime = tz_field(default_now=True)
