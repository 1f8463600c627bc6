"""Table of audit entries (append-only)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from gateway.timeutil import tz_field


class AuditEntry(SQLModel, table=True):
    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True, sa_type=sa.BigInteger)
    at: datetime = tz_field(default_now=True, index=True)
    actor: str = Field(
        max_length=320, description="'admin', 'operator:<e-mail>', the tenant key id that acted, or the e-mail tried"
    )
    action: str = Field(max_length=60, index=True)
    target: str | None = Field(default=None, max_length=200)
    detail: dict[str, Any] | None = Field(default=None, sa_type=JSONB)
    ip: str | None = Field(default=None, max_length=64)
