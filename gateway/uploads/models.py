"""Tables of resumable uploads and their parts (the parts' bytes are files under the data folder)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from gateway.timeutil import tz_field


class Upload(SQLModel, table=True):
    __tablename__ = "uploads"

    id: str = Field(primary_key=True, max_length=40)
    tenant_id: str = Field(foreign_key="tenants.id", index=True, max_length=40)
    filename: str = Field(max_length=300)
    purpose: str = Field(max_length=40)
    bytes: int = Field(sa_type=sa.BigInteger)
    mime_type: str = Field(max_length=200)
    status: str = Field(default="pending", max_length=20, description="pending | completed | cancelled | expired")
    file_id: str | None = Field(default=None, max_length=40)
    created_at: datetime = tz_field(default_now=True)
    expires_at: datetime = tz_field()


class UploadPart(SQLModel, table=True):
    __tablename__ = "upload_parts"

    id: str = Field(primary_key=True, max_length=40)
    upload_id: str = Field(foreign_key="uploads.id", index=True, max_length=40)
    bytes: int = Field(sa_type=sa.BigInteger)
    created_at: datetime = tz_field(default_now=True)
