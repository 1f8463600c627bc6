"""Which engine model a tenant's `model` field means, and registering adapters with the engine."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway import ids
from gateway.adapters.models import Adapter, AdapterStatus
from gateway.adapters.storage import AdapterStore
from gateway.audit import service as audit
from gateway.audit.service import Actor
from gateway.cache import Invalidations, TtlCache
from gateway.db import guarded, transaction
from gateway.engine.client import EngineInfo
from gateway.engine.pool import AdapterRef, EnginePool
from gateway.errors import Conflict, EngineError, NotFound
from gateway.timeutil import utcnow

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

    @property
    def adapter(self) -> AdapterRef | None:
        """The adapter as the engine pool loads it (None for the base model)."""
        if self.adapter_id is None or self.adapter_path is None:
            return None
        return AdapterRef(self.adapter_id, self.adapter_path)


def model_not_found(model: str) -> NotFound:
    """The same answer for "no such model" and "someone else's adapter"."""
    return NotFound(
        f"The model `{model}` does not exist or you do not have access to it.",
        code="model_not_found",
        param="model",
    )


class TargetCache:
    """Resolved adapters by (tenant, model). Any change to a tenant's adapters drops that tenant's entries in
    every process (gateway/cache.py); the open-request insert checks the adapter again at admission."""

    def __init__(self, channel: Invalidations, ttl_s: float) -> None:
        self.entries: TtlCache[tuple[str, Target]] = TtlCache(channel, ttl_s)
        channel.subscribe(self._drop)

    def _drop(self, kind: str, ident: str) -> None:
        if kind in ("adapter", "tenant"):
            self.entries.drop(lambda e: e[0] != ident)
        elif kind == "*":
            self.entries.drop()


async def resolve(
    db: AsyncEngine, bases: Collection[str], tenant_id: str, model: str, cache: TargetCache | None = None
) -> Target:
    """A base model the engines serve, or one of this tenant's ready adapters by name or deployment id."""
    if model in bases:
        return Target(engine_model=model, base_model=model)
    if cache is not None:
        hit = cache.entries.get((tenant_id, model))
        if hit is not None:
            return hit[1]
        generation = cache.entries.token()
    async with guarded(), db.connect() as conn:
        row = (await conn.execute(_RESOLVE, {"t": tenant_id, "m": model})).first()
    if row is None:
        raise model_not_found(model)
    target = Target(engine_model=row.id, base_model=row.base_model, adapter_id=row.id, adapter_path=row.path)
    if cache is not None:
        cache.entries.put((tenant_id, model), (tenant_id, target), generation)
    return target


async def list_ready(session: AsyncSession, tenant_id: str) -> list[Adapter]:
    stmt = select(Adapter).where(
        Adapter.tenant_id == tenant_id,
        col(Adapter.deleted_at).is_(None),
        Adapter.status == AdapterStatus.ready,
    )
    return list((await session.exec(stmt)).all())


def refuse_base_model_name(name: str, bases: Collection[str]) -> None:
    """A deployment named like a served base model could never be called by that name: the base model wins."""
    if name in bases:
        raise Conflict(f"{name!r} is a base model served here; give the adapter another name.", param="name")


async def register(
    session: AsyncSession,
    engines: EnginePool,
    info: EngineInfo,
    tenant_id: str,
    name: str,
    path: Path,
    rank: int,
    *,
    actor: Actor,
    action: str,
    content_hash: str = "",
    size_bytes: int = 0,
) -> Adapter:
    """Record an adapter folder already on disk (status loading) with its audit row, load it on the engine its
    traffic will go to, mark it ready or failed."""
    refuse_base_model_name(name, await engines.bases())
    adapter = Adapter(
        id=ids.deployment_id(),
        tenant_id=tenant_id,
        name=name,
        base_model=info.base_model,
        path=str(path),
        rank=rank,
        content_hash=content_hash,
        size_bytes=size_bytes,
    )
    # The deployment and its audit row commit together, before the engine is asked: if this commit fails, the
    # engine was never touched (the caller removes the unshared files). The load's outcome is a later state of
    # the same deployment (ready/failed); if that commit fails, the row stays 'loading' and is never served.
    async with transaction(session, duplicate=Conflict(f"You already have an adapter named {name!r}.", param="name")):
        session.add(adapter)
        await audit.record(
            await session.connection(), actor, action, adapter.id, {"tenant_id": tenant_id, "name": name}
        )
    reason: str | None = None
    try:
        await engines.load_new(info.base_model, AdapterRef(adapter.id, adapter.path))
    except EngineError as exc:
        status, reason = AdapterStatus.failed, exc.message
    else:
        status = AdapterStatus.ready
    async with transaction(session):
        adapter.status, adapter.status_reason = status, reason
    return adapter


async def get_owned(session: AsyncSession, tenant_id: str, deployment_id: str) -> Adapter:
    """The tenant's live deployment, or the same 404 whether it is someone else's or does not exist."""
    adapter = await session.get(Adapter, deployment_id)
    if adapter is None or adapter.tenant_id != tenant_id or adapter.deleted_at is not None:
        raise NotFound(f"No deployment {deployment_id!r}.", code="deployment_not_found", param="id")
    return adapter


async def list_owned(session: AsyncSession, tenant_id: str) -> list[Adapter]:
    stmt = (
        select(Adapter)
        .where(Adapter.tenant_id == tenant_id, col(Adapter.deleted_at).is_(None))
        .order_by(col(Adapter.created_at).desc())
    )
    return list((await session.exec(stmt)).all())


async def name_taken(session: AsyncSession, tenant_id: str, name: str) -> bool:
    stmt = select(Adapter.id).where(
        Adapter.tenant_id == tenant_id, Adapter.name == name, col(Adapter.deleted_at).is_(None)
    )
    return (await session.exec(stmt)).first() is not None


async def path_in_use(session: AsyncSession, path: str) -> bool:
    stmt = select(Adapter.id).where(Adapter.path == path, col(Adapter.deleted_at).is_(None))
    return (await session.exec(stmt)).first() is not None


async def delete(
    session: AsyncSession, engines: EnginePool, store: AdapterStore, adapter: Adapter, actor: Actor
) -> None:
    """Soft-delete (usage history keeps pointing at it) with its audit row, unload from the engines, drop unshared
    files."""
    # One commit for the deletion and its audit row, before the engine and the disk are touched: if it fails,
    # the deployment is still live and still loaded, as the client is told. After it, calls are refused (resolve
    # reads the row) even if an unload below fails; the engine then drops the adapter on its next restart.
    detail = {"tenant_id": adapter.tenant_id, "name": adapter.name}
    async with transaction(session):
        adapter.deleted_at = utcnow()
        adapter.status = AdapterStatus.deleted
        await audit.record(await session.connection(), actor, "adapter.delete", adapter.id, detail)
    await engines.unload_everywhere(adapter.id)
    if adapter.content_hash and not await path_in_use(session, adapter.path):
        await asyncio.to_thread(store.remove, Path(adapter.path))


_READY_ON = sa.select(_ADAPTERS.c.id, _ADAPTERS.c.path).where(
    _ADAPTERS.c.base_model == sa.bindparam("b"),
    _ADAPTERS.c.deleted_at.is_(None),
    _ADAPTERS.c.status == AdapterStatus.ready,
)


async def ready_on(db: AsyncEngine, base_model: str) -> list[AdapterRef]:
    """Every ready adapter of a base model (what an engine that comes up may need to hold)."""
    async with guarded(), db.connect() as conn:
        rows = (await conn.execute(_READY_ON, {"b": base_model})).all()
    return [AdapterRef(row.id, row.path) for row in rows]


def _stage_copy(store: AdapterStore, folder: Path) -> tuple[Path, str, int]:
    import shutil

    from gateway.adapters.archive import CONFIG, WEIGHTS

    staging = store.new_staging()
    staging.mkdir()
    for name in (CONFIG, WEIGHTS):
        shutil.copyfile(folder / name, staging / name)
    return store.commit(staging)


async def deploy_trained(
    session: AsyncSession,
    engines: EnginePool,
    store: AdapterStore,
    info: EngineInfo,
    tenant_id: str,
    name: str,
    folder: Path,
    rank: int,
) -> Adapter:
    """Deploy a PEFT folder the trainer made, through the same store and registration as an upload. If the
    engine is down, the adapter is kept ready: the engine loads it when it comes back, as it does every
    ready adapter."""
    path, content_hash, size = await asyncio.to_thread(_stage_copy, store, folder)
    adapter = await register(
        session, engines, info, tenant_id, name, path, rank,
        actor=Actor("trainer"), action="adapter.train", content_hash=content_hash, size_bytes=size,
    )  # fmt: skip
    if adapter.status == AdapterStatus.failed and not await engines.ready():
        adapter.status, adapter.status_reason = AdapterStatus.ready, None
        await session.commit()
    return adapter
