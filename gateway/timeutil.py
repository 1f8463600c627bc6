"""Timezone-aware time helpers; the database stores timestamptz only."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlmodel import Field


def utcnow() -> datetime:
    return datetime.now(UTC)


def tz_field(*, nullable: bool = False, index: bool = False, default_now: bool = False) -> datetime:
    """A timestamptz column for SQLModel tables."""
    kwargs = {"default_factory": utcnow} if default_now else {"default": None}
    return Field(  # type: ignore[no-any-return]
        sa_type=sa.DateTime(timezone=True), nullable=nullable, index=index, **kwargs
    )
