"""Table of deployed adapters."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from gateway.timeutil import tz_field


class AdapterStatus(StrEnum):
    loading = "loading"
    ready = "ready"
    failed = "failed"
    deleted = "deleted"


class Adapter(SQLModel, table=True):
    """One deployment: a tenant's LoRA on the base model. `id` (mif-…) is also its name on the engine."""

    __tablename__ = "adapters"
    __table_args__ = (
        sa.Index(
            "uq_adapters_tenant_name_live",
            "tenant_id",
            "name",
            unique=True,
            postgresql_where=sa.text("deleted_at IS NULL"),
        ),
    )

    id: str = Field(primary_key=True, max_length=40)
    tenant_id: str = Field(foreign_key="tenants.id", index=True, max_length=40)
    name: str = Field(max_length=200)
    base_model: str = Field(max_length=200)
    path: str = Field(max_length=1000)
    rank: int = Field(default=0)
    size_bytes: int = Field(default=0, sa_type=sa.BigInteger)
    content_hash: str = Field(default="", max_length=64)
    status: str = Field(default=AdapterStatus.loading, max_length=20)
    status_reason: str | None = Field(default=None, max_length=1000)
    created_at: datetime = tz_field(default_now=True)
    deleted_at: datetime | None = tz_field(nullable=True)
