"""Which engine model a tenant's `model` field means, and registering adapters with the engine."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway import ids
from gateway.adapters.models import Adapter, AdapterStatus
from gateway.db import guarded
from gateway.engine.client import EngineClient, EngineInfo
from gateway.errors import Conflict, EngineError, NotFound

log = logging.getLogger(__name__)

_ADAPTERS = Adapter.__table__  # type: ignore[attr-defined]
_RESOLVE = sa.select(_ADAPTERS.c.id, _ADAPTERS.c.path, _ADAPTERS.c.base_model).where(
    _ADAPTERS.c.tenant_id == sa.bindparam("t"),
    _ADAPTERS.c.deleted_at.is_(None),
    _ADAPTERS.c.status == AdapterStatus.ready,
    sa.or_(_ADAPTERS.c.id == sa.bindparam("m"), _ADAPTERS.c.name == sa.bindparam("m")),
)


@dataclass(frozen=True, slots=True)
class Target:
    """Where a call goes: the engine's model name, and the adapter it belongs to (None for the base)."""

    engine_model: str
    base_model: str
    adapter_id: str | None = None
    adapter_path: str | None = None


def model_not_found(model: str) -> NotFound:
    """The same answer for "no such model" and "someone else's adapter"."""
    return NotFound(
        f"The model `{model}` does not exist or you do not have access to it.",
        code="model_not_found",
        param="model",
    )


async def resolve(db: AsyncEngine, info: EngineInfo, tenant_id: str, model: str) -> Target:
    """The base model, or one of this tenant's ready adapters by name or deployment id."""
    if model == info.base_model:
        return Target(engine_model=model, base_model=model)
    async with guarded(), db.connect() as conn:
        row = (await conn.execute(_RESOLVE, {"t": tenant_id, "m": model})).first()
    if row is None:
        raise model_not_found(model)
    return Target(engine_model=row.id, base_model=row.base_model, adapter_id=row.id, adapter_path=row.path)


async def list_ready(session: AsyncSession, tenant_id: str) -> list[Adapter]:
    stmt = select(Adapter).where(
        Adapter.tenant_id == tenant_id,
        col(Adapter.deleted_at).is_(None),
        Adapter.status == AdapterStatus.ready,
    )
    return list((await session.exec(stmt)).all())


async def register(
    session: AsyncSession,
    engine: EngineClient,
    info: EngineInfo,
    tenant_id: str,
    name: str,
    path: Path,
    rank: int,
) -> Adapter:
    """Record an adapter folder already on disk and load it into the engine."""
    adapter = Adapter(
        id=ids.deployment_id(),
        tenant_id=tenant_id,
        name=name,
        base_model=info.base_model,
        path=str(path),
        rank=rank,
    )
    session.add(adapter)
    try:
        await session.commit()
    except IntegrityError as exc:
        await session.rollback()
        raise Conflict(f"You already have an adapter named {name!r}.", param="name") from exc
    try:
        await engine.load_adapter(adapter.id, adapter.path)
    except EngineError as exc:
        adapter.status, adapter.status_reason = AdapterStatus.failed, exc.message
    else:
        adapter.status = AdapterStatus.ready
    await session.commit()
    return adapter


async def reload_all(db: AsyncEngine, engine: EngineClient) -> int:
    """Put every ready adapter back into the engine (after a start or an engine restart)."""
    stmt = sa.select(_ADAPTERS.c.id, _ADAPTERS.c.path).where(
        _ADAPTERS.c.deleted_at.is_(None), _ADAPTERS.c.status == AdapterStatus.ready
    )
    async with db.connect() as conn:
        rows = (await conn.execute(stmt)).all()
    for row in rows:
        await engine.load_adapter(row.id, row.path)
    return len(rows)
