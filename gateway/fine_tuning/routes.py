"""OpenAI's fine-tuning jobs API."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.auth.service import Caller
from gateway.engine.pool import EnginePool
from gateway.errors import InvalidRequest
from gateway.files.storage import BlobStore
from gateway.fine_tuning import service
from gateway.fine_tuning.schemas import checkpoint_public, event_public, job_public, page
from gateway.settings import Settings


def _limit(limit: int) -> int:
    if not 1 <= limit <= 100:
        raise InvalidRequest("'limit' must be between 1 and 100.", param="limit")
    return limit


class FineTuningController(Controller):
    path = "/v1/fine_tuning/jobs"
    tags = ["Fine-tuning"]

    @post("/", status_code=200)
    async def create(
        self,
        request: Request[Any, Any, Any],
        caller: Caller,
        db_session: AsyncSession,
        engines: EnginePool,
        file_store: BlobStore,
        settings: Settings,
    ) -> dict[str, Any]:
        """Fine-tune a base model on a `fine-tune` file: a LoRA, deployed when the job succeeds."""
        try:
            body = await request.json()
        except ValueError:
            raise InvalidRequest("The body must be a JSON object.", code="invalid_json") from None
        if not isinstance(body, dict):
            raise InvalidRequest("The body must be a JSON object.", code="invalid_json")
        job = await service.create(db_session, engines, file_store, settings, caller.tenant_id, body)
        return job_public(job)

    @get("/")
    async def list_jobs(
        self, caller: Caller, db_session: AsyncSession, after: str | None = None, limit: int = 20
    ) -> dict[str, Any]:
        jobs, more = await service.list_owned(db_session, caller.tenant_id, after, _limit(limit))
        return page([job_public(j) for j in jobs], more)

    @get("/{job_id:str}")
    async def retrieve(self, job_id: str, caller: Caller, db_session: AsyncSession) -> dict[str, Any]:
        return job_public(await service.get_owned(db_session, caller.tenant_id, job_id))

    @post("/{job_id:str}/cancel", status_code=200)
    async def cancel(self, job_id: str, caller: Caller, db_session: AsyncSession, settings: Settings) -> dict[str, Any]:
        return job_public(await service.cancel(db_session, settings, caller.tenant_id, job_id))

    @get("/{job_id:str}/events")
    async def list_events(
        self, job_id: str, caller: Caller, db_session: AsyncSession, after: str | None = None, limit: int = 20
    ) -> dict[str, Any]:
        rows, more = await service.events(db_session, caller.tenant_id, job_id, after, _limit(limit))
        return page([event_public(e) for e in rows], more)

    @get("/{job_id:str}/checkpoints")
    async def list_checkpoints(
        self, job_id: str, caller: Caller, db_session: AsyncSession, after: str | None = None, limit: int = 10
    ) -> dict[str, Any]:
        job, rows, more = await service.checkpoints(db_session, caller.tenant_id, job_id, after, _limit(limit))
        name = job.fine_tuned_model or service.fine_tuned_name(job)
        return page([checkpoint_public(c, name) for c in rows], more)
