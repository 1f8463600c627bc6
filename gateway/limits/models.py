"""Per-minute counters shared by every gateway process through PostgreSQL."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel


class RateCounter(SQLModel, table=True):
    __tablename__ = "rate_counters"

    subject: str = Field(primary_key=True, max_length=60, description="t:<tenant id> or k:<key id>")
    window_start: datetime = Field(primary_key=True, sa_type=sa.DateTime(timezone=True))
    requests: int = 0
    tokens: int = Field(default=0, sa_type=sa.BigInteger)
