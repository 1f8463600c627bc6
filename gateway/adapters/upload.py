"""A tenant's adapter upload: stage, validate against the base model, store by content hash, deploy."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.adapters import quotas, service
from gateway.adapters.archive import CONFIG, WEIGHTS, discard, stage_files
from gateway.adapters.models import Adapter
from gateway.adapters.storage import AdapterStore
from gateway.adapters.validation import AdapterSpec, Architecture, check_weights, read_config
from gateway.audit.service import Actor
from gateway.engine.client import EngineInfo
from gateway.engine.pool import EnginePool
from gateway.errors import Conflict, InvalidRequest, PermissionDenied

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UploadLimits:
    max_unpacked_bytes: int
    base_model_dir: Path | None


@lru_cache(maxsize=8)
def _architecture(model_dir: str) -> Architecture | None:
    path = Path(model_dir) / "config.json"
    try:
        return Architecture.from_config(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError) as exc:
        log.warning("base model config %s unreadable (%s): adapter shapes are checked against the rank only", path, exc)
        return None


def architecture(info: EngineInfo, limits: UploadLimits) -> Architecture | None:
    """The base model's layer shapes, from ENGINE_BASE_MODEL_DIR or the folder the engine loaded it from."""
    folder = limits.base_model_dir or (Path(info.root) if info.root else None)
    return _architecture(str(folder.resolve())) if folder else None


def check_folder(folder: Path, info: EngineInfo, limits: UploadLimits) -> AdapterSpec:
    """An adapter folder's config and weights header against the engine's base model (422 if they do not fit)."""
    arch = architecture(info, limits)
    spec = read_config(folder, info.base_model, info.max_lora_rank, arch)
    check_weights(folder, spec, arch)
    return spec


def _stage_and_check(files: dict[str, BinaryIO], staging: Path, info: EngineInfo, limits: UploadLimits) -> AdapterSpec:
    stage_files(files, staging, limits.max_unpacked_bytes)
    return check_folder(staging, info, limits)


def registered_folder(raw: str, root: Path | None, info: EngineInfo, limits: UploadLimits) -> tuple[Path, AdapterSpec]:
    """An adapter folder the admin API registers by path: under ADAPTER_REGISTER_ROOT (links resolved first), with
    both files, and passing the same checks as an upload."""
    if root is None:
        raise PermissionDenied(
            "Registering adapters by path is off: set ADAPTER_REGISTER_ROOT to the folder they may come from, "
            "or upload the adapter (POST /v1/adapters).",
            code="registration_by_path_disabled",
            param="path",
        )
    base = root.resolve()
    try:
        folder = (base / raw).resolve()  # an absolute `raw` replaces base; a relative one is taken under it
        files = [folder / CONFIG, folder / WEIGHTS]
        inside = all(p.resolve().is_relative_to(base) for p in (folder, *files))
    except (OSError, ValueError) as exc:  # a NUL byte, a link loop…
        raise InvalidRequest(f"{raw!r} is not a usable path: {exc}", param="path") from exc
    if not inside:
        raise PermissionDenied(
            f"{raw!r} is outside ADAPTER_REGISTER_ROOT ({base}): adapters are registered only from there.",
            code="path_not_allowed",
            param="path",
        )
    missing = [p.name for p in files if not p.is_file()]
    if missing:
        raise InvalidRequest(f"No {' or '.join(missing)} in {str(folder)!r} on the gateway host.", param="path")
    return folder, check_folder(folder, info, limits)


async def deploy_upload(
    session: AsyncSession,
    engines: EnginePool,
    store: AdapterStore,
    limits: UploadLimits,
    tenant_id: str,
    name: str,
    base_model: str | None,
    files: dict[str, BinaryIO],
    actor: Actor,
    bounds: quotas.UploadBounds | None = None,
) -> Adapter:
    """Validate everything before touching the engine; a rejected upload leaves no files and no rows. With
    `bounds`, the tenant's deployment count and stored bytes are checked under its lock before the row is added."""
    bases = await engines.bases()
    unknown, ambiguous = bool(base_model) and base_model not in bases, not base_model and len(bases) > 1
    if unknown or ambiguous:
        served = ", ".join(repr(b) for b in sorted(bases))
        raise InvalidRequest(
            f"Base model {base_model!r} is not served here; this gateway serves {served}."
            if base_model
            else f"Name the adapter's base_model: this gateway serves {served}.",
            code="model_not_found" if base_model else "missing_required_parameter",
            param="base_model",
        )
    info = await engines.info(base_model)
    service.refuse_base_model_name(name, bases)
    if await service.name_taken(session, tenant_id, name):
        raise Conflict(f"You already have a deployment named {name!r}.", param="name")
    staging = store.new_staging()
    try:
        spec = await asyncio.to_thread(_stage_and_check, files, staging, info, limits)
        if bounds is not None:  # the lock is held until register() commits the new row
            staged = sum((staging / name).stat().st_size for name in (CONFIG, WEIGHTS))
            await quotas.lock_and_check(session, bounds, staged)
        path, content_hash, size = await asyncio.to_thread(store.commit, staging)
    except BaseException:
        await asyncio.to_thread(discard, staging)
        raise
    try:
        return await service.register(
            session, engines, info, tenant_id, name, path, spec.rank,
            actor=actor, action="adapter.upload", content_hash=content_hash, size_bytes=size,
        )  # fmt: skip
    except Conflict:
        if not await service.path_in_use(session, str(path)):
            await asyncio.to_thread(store.remove, path)
        raise
