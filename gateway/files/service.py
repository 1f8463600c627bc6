"""Store, list, read and delete a tenant's files; fine-tune files are validated before they are kept."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway import ids
from gateway.errors import InvalidRequest, NotFound, PayloadTooLarge, RateLimited
from gateway.files.models import StoredFile
from gateway.files.storage import BlobStore
from gateway.files.validation import BadTrainingFile, Messages, check_training_file
from gateway.timeutil import utcnow

PURPOSES = ("fine-tune", "adapter")
_FILES = StoredFile.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class TokenCheck:
    """How a fine-tune file's conversations are measured against the base model's context length."""

    count: Callable[[Messages], int]
    max_tokens: int


def check_purpose(purpose: object) -> str:
    if purpose not in PURPOSES:
        raise InvalidRequest(
            f"'purpose' must be one of {', '.join(PURPOSES)}; got {purpose!r}.",
            code="invalid_value" if purpose else "missing_required_parameter",
            param="purpose",
        )
    return str(purpose)


def _stage(
    store: BlobStore,
    source: BinaryIO,
    limit: int,
    purpose: str,
    tokens: TokenCheck | None,
    check: Callable[[], None] | None,
) -> tuple:  # type: ignore[type-arg]
    staging = store.new_staging()
    try:
        try:
            content_hash, size = store.write(source, staging, limit)
        except ValueError:
            raise PayloadTooLarge(f"Files are limited to {limit} bytes.", param="file") from None
        if check is not None:
            check()
        examples = 0
        if purpose == "fine-tune":
            try:
                examples = check_training_file(
                    staging, tokens.count if tokens else None, tokens.max_tokens if tokens else None
                )
            except BadTrainingFile as exc:
                raise InvalidRequest(
                    f"Invalid fine-tune file: {exc}", code="invalid_training_file", param="file"
                ) from None
        return staging, content_hash, size, examples
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


async def create(
    session: AsyncSession,
    store: BlobStore,
    tenant_id: str,
    purpose: str,
    filename: str,
    source: BinaryIO,
    *,
    max_bytes: int,
    quota_bytes: int,
    tokens: TokenCheck | None = None,
    check: Callable[[], None] | None = None,
) -> StoredFile:
    """Copy the upload to disk, validate it, check the tenant's quota, then record it (all or nothing)."""
    staging, content_hash, size, examples = await asyncio.to_thread(
        _stage, store, source, max_bytes, purpose, tokens, check
    )
    try:
        # One tenant's uploads are serialized here, so two at once cannot both squeeze under the quota.
        await session.exec(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext("files:" + tenant_id))))  # type: ignore[call-overload]
        used = await stored_bytes(session, tenant_id)
        if used + size > quota_bytes:
            raise RateLimited(
                f"Storage quota exceeded: you store {used} bytes of files and this one is {size}; "
                f"the limit is {quota_bytes}. Delete files you no longer need.",
                code="storage_quota_exceeded",
                param="file",
            )
        row = StoredFile(
            id=ids.new_id("file-", 24),
            tenant_id=tenant_id,
            purpose=purpose,
            filename=filename[:300],
            bytes=size,
            content_hash=content_hash,
            examples=examples,
        )
        session.add(row)
        await asyncio.to_thread(store.commit, staging, content_hash)
        await session.commit()
    except BaseException:
        await asyncio.to_thread(Path(staging).unlink, missing_ok=True)
        raise
    return row


async def stored_bytes(session: AsyncSession, tenant_id: str) -> int:
    stmt = sa.select(sa.func.coalesce(sa.func.sum(_FILES.c.bytes), 0)).where(
        _FILES.c.tenant_id == tenant_id, _FILES.c.deleted_at.is_(None)
    )
    return int((await session.exec(stmt)).one()[0])  # type: ignore[call-overload]


def file_not_found(file_id: str, param: str = "file_id") -> NotFound:
    """The same answer for a missing file and someone else's."""
    return NotFound(f"No such File object: {file_id}", code="file_not_found", param=param)


async def get_owned(session: AsyncSession, tenant_id: str, file_id: str, param: str = "file_id") -> StoredFile:
    row = await session.get(StoredFile, file_id)
    if row is None or row.tenant_id != tenant_id or row.deleted_at is not None:
        raise file_not_found(file_id, param)
    return row


async def list_owned(
    session: AsyncSession, tenant_id: str, purpose: str | None, limit: int, after: str | None, order: str
) -> tuple[list[StoredFile], bool]:
    stmt = select(StoredFile).where(StoredFile.tenant_id == tenant_id, col(StoredFile.deleted_at).is_(None))
    if purpose:
        stmt = stmt.where(StoredFile.purpose == purpose)
    created, ident = col(StoredFile.created_at), col(StoredFile.id)
    if after:
        cursor = await get_owned(session, tenant_id, after, "after")
        key = sa.tuple_(created, ident)
        stmt = stmt.where(
            key < (cursor.created_at, cursor.id) if order == "desc" else key > (cursor.created_at, cursor.id)
        )
    ordering = (created.desc(), ident.desc()) if order == "desc" else (created.asc(), ident.asc())
    rows = list((await session.exec(stmt.order_by(*ordering).limit(limit + 1))).all())
    return rows[:limit], len(rows) > limit


async def delete(session: AsyncSession, store: BlobStore, row: StoredFile) -> None:
    """Forget the file; its bytes go when no other live file (any tenant's) has the same content."""
    row.deleted_at = utcnow()
    await session.commit()
    shared = select(StoredFile.id).where(
        StoredFile.content_hash == row.content_hash, col(StoredFile.deleted_at).is_(None)
    )
    if (await session.exec(shared)).first() is None:
        await asyncio.to_thread(store.remove, row.content_hash)
