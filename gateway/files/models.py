"""Table of tenant files; the bytes live in the blob store under their sha256."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from gateway.timeutil import tz_field


class StoredFile(SQLModel, table=True):
    __tablename__ = "files"

    id: str = Field(primary_key=True, max_length=40)
    tenant_id: str = Field(foreign_key="tenants.id", index=True, max_length=40)
    purpose: str = Field(max_length=40)
    filename: str = Field(max_length=300)
    bytes: int = Field(sa_type=sa.BigInteger)
    content_hash: str = Field(max_length=64, index=True)
    examples: int = Field(default=0, description="training examples (fine-tune files)")
    created_at: datetime = tz_field(default_now=True)
    deleted_at: datetime | None = tz_field(nullable=True)
