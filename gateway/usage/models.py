"""Table of usage records."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import TypedDict

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from gateway.timeutil import tz_field


class UsageStatus(StrEnum):
    """How a metered request ended (usage_records.status)."""

    OK = "ok"  # answered in full
    REJECTED = "rejected"  # the engine refused it (HTTP 4xx), no tokens
    ENGINE_ERROR = "engine_error"  # the engine failed (HTTP 5xx), or its stream broke midway
    CLIENT_CLOSED = "client_closed"  # the client hung up before the end of its stream
    GATEWAY_LOST = "gateway_lost"  # the gateway serving it died; billed from its last checkpoint by a sweep


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
    status: str = Field(max_length=20, description=" | ".join(UsageStatus))
    http_status: int = 200
    started_at: datetime = tz_field()
    finished_at: datetime = tz_field()
    latency_ms: int = 0
    source: str = Field(
        default="api", sa_type=sa.Text, sa_column_kwargs={"server_default": "api"},
        description="api | playground (the console's playground, through the same path)",
    )  # fmt: skip


class OpenRequest(SQLModel, table=True):
    """A request admitted but not yet metered: written (and committed) before the engine sees it, deleted in the
    transaction that writes its usage row. A row whose gateway process died is settled by a surviving one."""

    __tablename__ = "open_requests"
    __table_args__ = (
        sa.Index("ix_open_requests_tenant", "tenant_id"),
        sa.Index("ix_open_requests_key", "api_key_id"),
        sa.Index("ix_open_requests_instance", "instance_id"),
    )

    request_id: str = Field(max_length=40, primary_key=True)
    instance_id: str = Field(max_length=40, description="The gateway process serving it")
    tenant_id: str = Field(foreign_key="tenants.id", max_length=40)
    api_key_id: str = Field(foreign_key="api_keys.id", max_length=40)
    model: str = Field(max_length=200)
    base_model: str = Field(max_length=200)
    adapter_id: str | None = Field(default=None, foreign_key="adapters.id", max_length=40)
    endpoint: str = Field(max_length=40)
    stream: bool = False
    reserved_trial_tokens: int = Field(default=0, sa_type=sa.BigInteger, description="Prepaid admission's hold")
    reserved_micros: int = Field(default=0, sa_type=sa.BigInteger, description="Prepaid admission's hold")
    prompt_tokens: int = Field(default=0, description="Running usage at the last checkpoint")
    completion_tokens: int = Field(default=0, description="Running usage at the last checkpoint")
    started_at: datetime = tz_field()
    checkpoint_at: datetime | None = tz_field(nullable=True)


class GatewayInstance(SQLModel, table=True):
    """A live gateway process; its heartbeat tells the others whether its open requests are orphans."""

    __tablename__ = "gateway_instances"

    id: str = Field(max_length=40, primary_key=True)
    host: str = Field(max_length=200)
    pid: int
    started_at: datetime = tz_field()
    heartbeat_at: datetime = tz_field()
    expires_at: datetime = tz_field(index=True)  # silent past this, it is dead (its own timeout)


class UsageRow(TypedDict):
    """A usage_records row on the per-request path: a plain dict, no ORM object. Its keys are the table's
    columns but `id` (tests/unit/test_usage_row.py checks it); gateway/admission/sql.py inserts them."""

    request_id: str
    tenant_id: str
    api_key_id: str
    model: str
    base_model: str
    adapter_id: str | None
    endpoint: str
    stream: bool
    prompt_tokens: int
    completion_tokens: int
    status: UsageStatus
    http_status: int
    started_at: datetime
    finished_at: datetime
    latency_ms: int
    source: str


def usage_row(
    *,
    request_id: str,
    tenant_id: str,
    api_key_id: str,
    model: str,
    base_model: str,
    adapter_id: str | None,
    endpoint: str,
    stream: bool,
    prompt_tokens: int,
    completion_tokens: int,
    status: UsageStatus,
    http_status: int,
    started_at: datetime,
    finished_at: datetime,
    source: str = "api",
) -> UsageRow:
    """A usage row; its latency is the time from start to finish."""
    return UsageRow(
        request_id=request_id,
        tenant_id=tenant_id,
        api_key_id=api_key_id,
        model=model,
        base_model=base_model,
        adapter_id=adapter_id,
        endpoint=endpoint,
        stream=stream,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        status=status,
        http_status=http_status,
        started_at=started_at,
        finished_at=finished_at,
        latency_ms=int((finished_at - started_at).total_seconds() * 1000),
        source=source,
    )
