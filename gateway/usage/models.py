"""Table of usage records."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from gateway.timeutil import tz_field


class UsageRecord(SQLModel, table=True):
    """The engine's own token counts for one request. `request_id` is unique: a row is never written twice."""

    __tablename__ = "usage_records"
    __table_args__ = (
        sa.Index("ix_usage_tenant_started", "tenant_id", "started_at"),
        sa.Index("ix_usage_key_started", "api_key_id", "started_at"),
        sa.Index("ix_usage_started", "started_at"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=sa.BigInteger)
    request_id: str = Field(max_length=40, unique=True)
    tenant_id: str = Field(foreign_key="tenants.id", max_length=40)
    api_key_id: str = Field(foreign_key="api_keys.id", max_length=40)
    model: str = Field(max_length=200, description="The model name as the client asked for it")
    base_model: str = Field(max_length=200)
    adapter_id: str | None = Field(default=None, foreign_key="adapters.id", max_length=40, index=True)
    endpoint: str = Field(max_length=40)
    stream: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    status: str = Field(max_length=20, description="ok | engine_error | client_closed")
    http_status: int = 200
    started_at: datetime = tz_field()
    finished_at: datetime = tz_field()
    latency_ms: int = 0
