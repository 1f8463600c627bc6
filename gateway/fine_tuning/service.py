"""Create, list, cancel fine-tuning jobs; their events and checkpoints. Knows nothing of HTTP or torch."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway import ids, queue
from gateway.engine.pool import EnginePool
from gateway.errors import InvalidRequest, NotFound
from gateway.files import service as files
from gateway.files.storage import BlobStore
from gateway.fine_tuning import billing as ft_billing
from gateway.fine_tuning import hyperparameters
from gateway.fine_tuning.base_models import model_dir
from gateway.fine_tuning.models import FINAL, FineTuningCheckpoint, FineTuningEvent, FineTuningJob, JobStatus
from gateway.fine_tuning.tokens import file_tokens, tokenizer
from gateway.settings import Settings
from gateway.timeutil import utcnow

_SUFFIX = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def job_not_found(job_id: str) -> NotFound:
    return NotFound(f"No fine-tuning job {job_id!r}.", code="fine_tuning_job_not_found", param="fine_tuning_job_id")


def fine_tuned_name(job: FineTuningJob) -> str:
    """OpenAI's naming: ft:<base>:<organization>:<suffix>:<short id>."""
    return f"ft:{job.model}:{job.tenant_id}:{job.suffix or ''}:{job.id[-8:]}"


def add_event(
    session: AsyncSession, job_id: str, message: str, *, level: str = "info", kind: str = "message", data: Any = None
) -> None:
    session.add(FineTuningEvent(job_id=job_id, message=message[:1000], level=level, type=kind, data=data))


async def _training_file(session: AsyncSession, tenant_id: str, file_id: Any, param: str) -> Any:
    if not isinstance(file_id, str) or not file_id:
        raise InvalidRequest(f"'{param}' is required.", code="missing_required_parameter", param=param)
    row = await files.get_owned(session, tenant_id, file_id, param)
    if row.purpose != "fine-tune":
        raise InvalidRequest(
            f"File {file_id} has purpose {row.purpose!r}; fine-tuning needs a 'fine-tune' file.",
            code="invalid_file_purpose",
            param=param,
        )
    return row


async def count_trained_tokens(store: BlobStore, base_dir: str, content_hash: str) -> int:
    """Tokens of one epoch over the file, with the base model's tokenizer and chat template."""

    def count() -> int:
        return file_tokens(tokenizer(base_dir), store.path_of(content_hash))

    return await asyncio.to_thread(count)


async def create(
    session: AsyncSession,
    engines: EnginePool,
    store: BlobStore,
    settings: Settings,
    tenant_id: str,
    body: dict[str, Any],
) -> FineTuningJob:
    """Check the request (model, files, hyperparameters), estimate its tokens, record it and queue it in one
    transaction."""
    model = body.get("model")
    bases = await engines.bases()
    if not isinstance(model, str) or model not in bases:
        raise InvalidRequest(
            f"Model {model!r} cannot be fine-tuned here; the base models are {', '.join(sorted(bases))}.",
            code="model_not_available",
            param="model",
        )
    training = await _training_file(session, tenant_id, body.get("training_file"), "training_file")
    validation = None
    if body.get("validation_file") is not None:
        validation = await _training_file(session, tenant_id, body["validation_file"], "validation_file")
    suffix = body.get("suffix")
    if suffix is not None and (not isinstance(suffix, str) or not _SUFFIX.match(suffix)):
        raise InvalidRequest("'suffix' must be 1–64 letters, digits, '-' or '_'.", param="suffix")
    seed = body.get("seed", 0)
    if seed is None:
        seed = 0
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= 2**31 - 1:
        raise InvalidRequest("'seed' must be an integer from 0 to 2147483647.", param="seed")
    info = await engines.info(model)
    hyper = hyperparameters.resolve(
        hyperparameters.requested(body), training.examples, info.max_lora_rank, settings.fine_tuning.max_epochs
    )
    folder = model_dir(settings, model, info.root)
    per_epoch = await count_trained_tokens(store, str(folder.resolve()), training.content_hash) if folder else 0
    job = FineTuningJob(
        id=ids.new_id("ftjob-", 24),
        tenant_id=tenant_id,
        model=model,
        training_file=training.id,
        validation_file=validation.id if validation else None,
        suffix=suffix,
        seed=seed,
        hyperparameters=hyper,
        status=JobStatus.queued,
        estimated_tokens=per_epoch * hyper["n_epochs"],
    )
    await ft_billing.hold(session, job, settings.billing)
    session.add(job)
    await session.flush()
    add_event(session, job.id, f"Validated training file: {training.examples} examples, {per_epoch} tokens per epoch")
    add_event(session, job.id, "Fine-tuning job queued")
    await queue.enqueue_in(session, queue.FINE_TUNE, {"job_id": job.id})
    await session.commit()
    return job


async def get_owned(session: AsyncSession, tenant_id: str, job_id: str) -> FineTuningJob:
    job = await session.get(FineTuningJob, job_id)
    if job is None or job.tenant_id != tenant_id:
        raise job_not_found(job_id)
    return job


async def list_owned(
    session: AsyncSession, tenant_id: str, after: str | None, limit: int
) -> tuple[list[FineTuningJob], bool]:
    """Newest first; `after` is the last job id of the previous page."""
    stmt = select(FineTuningJob).where(FineTuningJob.tenant_id == tenant_id)
    if after:
        cursor = await get_owned(session, tenant_id, after)
        stmt = stmt.where(
            sa.tuple_(col(FineTuningJob.created_at), col(FineTuningJob.id)) < (cursor.created_at, cursor.id)
        )
    stmt = stmt.order_by(col(FineTuningJob.created_at).desc(), col(FineTuningJob.id).desc()).limit(limit + 1)
    rows = list((await session.exec(stmt)).all())
    return rows[:limit], len(rows) > limit


async def cancel(session: AsyncSession, settings: Settings, tenant_id: str, job_id: str) -> FineTuningJob:
    """Cancel a job that has not ended. A running one stops within seconds (its trainer polls the row) and is
    charged for what it trained; a queued one costs nothing."""
    job = await get_owned(session, tenant_id, job_id)
    await session.refresh(job, with_for_update=True)
    if job.status in FINAL:
        raise InvalidRequest(
            f"Job {job_id} has already {job.status}; it cannot be cancelled.", param="fine_tuning_job_id"
        )
    was = job.status
    job.status = JobStatus.cancelled
    job.finished_at = utcnow()
    add_event(
        session, job.id, "Fine-tuning job cancelled" + (" (stopping the trainer)" if was == JobStatus.running else "")
    )
    await session.commit()
    return job


async def events(
    session: AsyncSession, tenant_id: str, job_id: str, after: str | None, limit: int
) -> tuple[list[FineTuningEvent], bool]:
    """Newest first, as OpenAI lists them; `after` is the last event id of the previous page."""
    await get_owned(session, tenant_id, job_id)
    stmt = select(FineTuningEvent).where(FineTuningEvent.job_id == job_id)
    if after:
        try:
            cursor = int(after.removeprefix("ftevent-"))
        except ValueError:
            raise InvalidRequest(f"Unknown event id {after!r}.", param="after") from None
        stmt = stmt.where(col(FineTuningEvent.id) < cursor)
    stmt = stmt.order_by(col(FineTuningEvent.id).desc()).limit(limit + 1)
    rows = list((await session.exec(stmt)).all())
    return rows[:limit], len(rows) > limit


async def checkpoints(
    session: AsyncSession, tenant_id: str, job_id: str, after: str | None, limit: int
) -> tuple[FineTuningJob, list[FineTuningCheckpoint], bool]:
    """Newest first (one per finished epoch)."""
    job = await get_owned(session, tenant_id, job_id)
    stmt = select(FineTuningCheckpoint).where(FineTuningCheckpoint.job_id == job_id)
    if after:
        cursor = await session.get(FineTuningCheckpoint, after)
        if cursor is None or cursor.job_id != job_id:
            raise InvalidRequest(f"Unknown checkpoint id {after!r}.", param="after")
        stmt = stmt.where(col(FineTuningCheckpoint.epoch) < cursor.epoch)
    stmt = stmt.order_by(col(FineTuningCheckpoint.epoch).desc()).limit(limit + 1)
    rows = list((await session.exec(stmt)).all())
    return job, rows[:limit], len(rows) > limit
