"""Tables of tenants and API keys."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from gateway.timeutil import tz_field


class Tenant(SQLModel, table=True):
    __tablename__ = "tenants"

    id: str = Field(primary_key=True, max_length=40)
    name: str = Field(max_length=200, unique=True)
    created_at: datetime = tz_field(default_now=True)
    suspended_at: datetime | None = tz_field(nullable=True)
    suspended_reason: str | None = Field(default=None, max_length=40, description="invoice_overdue: by dunning")
    rpm_limit: int | None = None
    tpm_limit: int | None = Field(default=None, sa_type=sa.BigInteger)
    max_concurrent_requests: int | None = None
    # Upload bounds: null follows the TENANT_* default, 0 is unlimited (the three above too, see settings.py).
    max_deployments: int | None = None
    max_adapter_bytes: int | None = Field(default=None, sa_type=sa.BigInteger)
    uploads_per_minute: int | None = None


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_keys"

    id: str = Field(primary_key=True, max_length=40)
    tenant_id: str = Field(foreign_key="tenants.id", index=True, max_length=40)
    name: str = Field(default="", max_length=200)
    prefix: str = Field(max_length=20)
    key_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = tz_field(default_now=True)
    revoked_at: datetime | None = tz_field(nullable=True)
    expires_at: datetime | None = tz_field(nullable=True)
    rpm_limit: int | None = None
    tpm_limit: int | None = Field(default=None, sa_type=sa.BigInteger)
    max_concurrent_requests: int | None = None
