"""Tables of tenants and API keys."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlmodel import Field, SQLModel

from gateway.timeutil import tz_field


class TenantStatus(StrEnum):
    """Where a tenant's application stands: only an active tenant's keys and users work."""

    PENDING = "pending"  # signed up, waiting for an operator (SIGNUP_MODE=approval)
    ACTIVE = "active"
    REJECTED = "rejected"


class Scope(StrEnum):
    """What an API key may do. Keys made by an operator, and keys from before scopes, may do everything."""

    INFERENCE = "inference"  # /v1/chat/completions, /v1/completions, /v1/models, /maas
    DEPLOYMENTS = "deployments"  # upload and delete adapters
    KEYS = "keys"  # /v1/keys: list, create, revoke the tenant's keys
    BILLING = "billing"  # /v1/usage, /v1/invoices, balance


ALL_SCOPES: tuple[str, ...] = tuple(s.value for s in Scope)


class Tenant(SQLModel, table=True):
    __tablename__ = "tenants"
    __table_args__ = (sa.CheckConstraint("status IN ('pending', 'active', 'rejected')", name="ck_tenants_status"),)

    id: str = Field(primary_key=True, max_length=40)
    name: str = Field(max_length=200, unique=True)
    created_at: datetime = tz_field(default_now=True)
    suspended_at: datetime | None = tz_field(nullable=True)
    suspended_reason: str | None = Field(default=None, max_length=40, description="invoice_overdue: by dunning")
    status: str = Field(
        default=TenantStatus.ACTIVE.value, sa_type=sa.Text, sa_column_kwargs={"server_default": "active"}, index=True
    )
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
    scopes: list[str] = Field(
        default_factory=lambda: list(ALL_SCOPES),
        sa_column=sa.Column(
            postgresql.ARRAY(sa.Text()),
            nullable=False,
            server_default=sa.text("'{inference,deployments,keys,billing}'"),
        ),
    )
    rpm_limit: int | None = None
    tpm_limit: int | None = Field(default=None, sa_type=sa.BigInteger)
    max_concurrent_requests: int | None = None
