"""A trainer process: takes fine-tuning jobs from the queue, trains, checkpoints, deploys, settles the bill.

Each queued job is handled once per pick; a pick after a dead worker's silence (kill -9) finds the job row
`running` with its attempt count, resumes from the last per-epoch checkpoint, or fails it after
TRAINER_MAX_ATTEMPTS. The final update is conditional on the attempt that owns the job, and the charge is
written in the same transaction with a unique key: a job is never charged twice.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway import db, queue
from gateway.adapters import service as adapters
from gateway.adapters.load_lock import load_lock
from gateway.adapters.storage import AdapterStore
from gateway.audit.service import Actor
from gateway.engine.pool import EnginePool
from gateway.errors import GatewayError
from gateway.files.models import StoredFile
from gateway.files.storage import BlobStore
from gateway.files.validation import examples as read_examples
from gateway.fine_tuning import billing as ft_billing
from gateway.fine_tuning.base_models import model_dir
from gateway.fine_tuning.models import FINAL, FineTuningCheckpoint, FineTuningJob, JobStatus
from gateway.fine_tuning.service import add_event, fine_tuned_name
from gateway.fine_tuning.tokens import conversation_tokens, tokenizer
from gateway.metrics import Metrics
from gateway.settings import Settings
from gateway.timeutil import utcnow
from gateway.trainer.train import Hooks, Outcome, Plan, train
from gateway.uploads import service as uploads

log = logging.getLogger(__name__)
_STATUS = sa.text("SELECT status, attempts FROM fine_tuning_jobs WHERE id = :id")


class JobFailed(Exception):
    """The job cannot be trained; the message is shown to the tenant."""


class Trainer:
    def __init__(self, settings: Settings, device: str = "cpu") -> None:
        self.settings = settings
        self.device = device
        self.busy = asyncio.Lock()  # one training at a time in this process

    async def run(self) -> None:
        from pgqueuer import Queries, QueueManager

        s = self.settings
        db.metadata()  # every table registered (the job rows reference tenants)
        self.db_engine: AsyncEngine = db.create_engine(s.database)
        self.sessions: async_sessionmaker[AsyncSession] = db.session_factory(self.db_engine)
        self.engines = EnginePool(
            s.engine,
            Metrics(s.metrics),
            lambda base: adapters.ready_on(self.db_engine, base),
            load_lock(self.db_engine),
        )
        self.engines.start()
        self.files = BlobStore(s.storage.data_dir / "files")
        self.adapter_store = AdapterStore(s.storage.data_dir / "adapters")
        self.workdir = (s.storage.data_dir / "fine_tuning").resolve()
        conn = await asyncpg.connect(s.database.plain_url())
        qm = QueueManager(Queries.from_asyncpg_connection(conn))

        @qm.entrypoint(queue.FINE_TUNE)
        async def fine_tune(job: Any) -> None:
            await self.handle(queue.payload_of(job)["job_id"])

        @qm.entrypoint(queue.EXPIRE_UPLOAD)
        async def expire_upload(job: Any) -> None:
            async with self.sessions() as session:
                await uploads.expire(session, s.storage.data_dir / "uploads", queue.payload_of(job)["upload_id"])

        log.info("trainer ready on %s (device %s)", s.database.plain_url().rsplit("@", 1)[-1], self.device)
        try:
            # One job in hand and at most one waiting: the other workers take the rest.
            await qm.run(
                batch_size=1,
                max_concurrent_tasks=2,
                dequeue_timeout=timedelta(seconds=5),
                heartbeat_timeout=timedelta(seconds=s.fine_tuning.trainer_heartbeat_timeout_s),
            )
        finally:
            await self.engines.aclose()
            await self.db_engine.dispose()

    async def handle(self, job_id: str) -> None:
        async with self.busy:
            try:
                started = await self._start(job_id)
            except Exception:
                log.exception("fine-tuning job %s could not start", job_id)
                raise
            if started is None:
                return
            job, attempt = started
            try:
                await self._train(job, attempt)
            except Exception as exc:  # the tenant sees the reason; the operator the trace
                reason = exc.message if isinstance(exc, GatewayError) else str(exc) or type(exc).__name__
                if not isinstance(exc, JobFailed | GatewayError):
                    log.exception("fine-tuning job %s failed", job_id)
                await self._finish_failed(job_id, attempt, reason)

    # --- state changes (each one transaction) ----------------------------------------------------------------

    async def _start(self, job_id: str) -> tuple[FineTuningJob, int] | None:
        async with self.sessions() as session:
            job = await session.get(FineTuningJob, job_id, with_for_update=True)
            if job is None:
                return None
            if job.status in FINAL:  # cancelled before it ran, or a pick of a job that already ended
                if not job.charged:
                    await ft_billing.settle(
                        session, job, await self._checkpoint_tokens(session, job.id), self.settings.billing
                    )
                    await session.commit()
                return None
            limit = self.settings.fine_tuning.trainer_max_attempts
            if job.attempts >= limit:
                tokens = await self._checkpoint_tokens(session, job.id)
                self._fail(session, job, f"The trainer stopped {job.attempts} times while running this job.")
                await ft_billing.settle(session, job, tokens, self.settings.billing)
                await session.commit()
                return None
            resumed = job.status == JobStatus.running
            job.attempts += 1
            job.status = JobStatus.running
            job.started_at = job.started_at or utcnow()
            add_event(
                session,
                job.id,
                f"Fine-tuning job resumed from its last checkpoint (attempt {job.attempts})"
                if resumed
                else "Fine-tuning job started",
            )
            await session.commit()
            return job, job.attempts

    def _fail(self, session: AsyncSession, job: FineTuningJob, reason: str) -> None:
        job.status = JobStatus.failed
        job.finished_at = utcnow()
        job.error = {"code": "training_failed", "message": reason, "param": None}
        add_event(session, job.id, f"Fine-tuning job failed: {reason}", level="error")

    async def _owned(self, session: AsyncSession, job_id: str, attempt: int) -> FineTuningJob | None:
        """The job row, locked, if this attempt still owns it (running, not cancelled, not taken over)."""
        job = await session.get(FineTuningJob, job_id, with_for_update=True, populate_existing=True)
        if job is None or job.attempts != attempt:
            return None
        return job

    async def _finish_failed(self, job_id: str, attempt: int, reason: str) -> None:
        async with self.sessions() as session:
            job = await self._owned(session, job_id, attempt)
            if job is None:
                return
            tokens = await self._checkpoint_tokens(session, job_id)
            if job.status == JobStatus.running:
                self._fail(session, job, reason)
            if not job.charged:
                await ft_billing.settle(session, job, tokens, self.settings.billing)
            await session.commit()

    async def _checkpoint_tokens(self, session: AsyncSession, job_id: str) -> int:
        stmt = select(sa.func.max(FineTuningCheckpoint.trained_tokens)).where(FineTuningCheckpoint.job_id == job_id)
        return int((await session.exec(stmt)).one() or 0)  # type: ignore[arg-type]

    async def _event(self, job_id: str, message: str, **kw: Any) -> None:
        async with self.sessions() as session:
            add_event(session, job_id, message, **kw)
            await session.commit()

    # --- the run ----------------------------------------------------------------------------------------------

    async def _train(self, job: FineTuningJob, attempt: int) -> None:
        async with self.sessions() as session:
            source = await session.get(StoredFile, job.training_file)
            valid = await session.get(StoredFile, job.validation_file) if job.validation_file else None
            last = (
                await session.exec(
                    select(FineTuningCheckpoint)
                    .where(FineTuningCheckpoint.job_id == job.id)
                    .order_by(col(FineTuningCheckpoint.epoch).desc())
                )
            ).first()
        if source is None or source.deleted_at is not None:
            raise JobFailed(f"The training file {job.training_file} was deleted.")
        info = await self.engines.info(job.model)
        folder = model_dir(self.settings, job.model, info.root)
        if folder is None:
            raise JobFailed(f"The trainer cannot find the weights of {job.model} (set TRAINER_MODEL_PATHS).")
        if job.validation_file and (valid is None or valid.deleted_at is not None):
            raise JobFailed(f"The validation file {job.validation_file} was deleted.")
        data = await asyncio.to_thread(self._examples, source.content_hash)
        validation = await asyncio.to_thread(self._examples, valid.content_hash) if valid else None
        tok = await asyncio.to_thread(tokenizer, str(folder.resolve()))
        per_example = [conversation_tokens(tok, m) for m in data]
        h = job.hyperparameters
        plan = Plan(
            n_epochs=h["n_epochs"],
            batch_size=h["batch_size"],
            learning_rate_multiplier=h["learning_rate_multiplier"],
            lora_rank=h["lora_rank"],
            lora_alpha=h["lora_alpha"],
            target_modules=h["lora_target_modules"],
            seed=job.seed,
        )
        out = self.workdir / job.id
        start_epoch, base_tokens, base_steps = (last.epoch, last.trained_tokens, last.step) if last else (0, 0, 0)
        steps_per_epoch = -(-len(data) // plan.batch_size)
        total_steps = steps_per_epoch * plan.n_epochs
        stop = threading.Event()
        watcher = asyncio.create_task(self._watch(job.id, attempt, stop))
        loop = asyncio.get_running_loop()
        began = time.monotonic()

        def on_step(step: int, epoch: int, loss: float, tokens: int) -> None:
            step += base_steps
            data_ = {"step": step, "total_steps": total_steps, "epoch": epoch, "train_loss": round(loss, 6)}
            message = f"Step {step}/{total_steps}: training loss={loss:.4f}"
            asyncio.run_coroutine_threadsafe(self._event(job.id, message, kind="metrics", data=data_), loop)

        def on_epoch(epoch: int, step: int, loss: float, tokens: int, path: Path, valid: float | None) -> None:
            done = asyncio.run_coroutine_threadsafe(
                self._checkpoint(
                    job,
                    attempt,
                    epoch,
                    step + base_steps,
                    {"train_loss": round(loss, 6)} | ({} if valid is None else {"valid_loss": round(valid, 6)}),
                    base_tokens + tokens,
                    path,
                    began,
                    total_steps,
                    base_steps,
                ),
                loop,
            )
            done.result()

        hooks = Hooks(on_step=on_step, on_epoch=on_epoch, cancelled=stop.is_set)
        resume = Path(last.path) if last else None
        try:
            outcome: Outcome = await asyncio.to_thread(
                train,
                folder,
                data,
                plan,
                out,
                device=self.device,
                resume=resume,
                start_epoch=start_epoch,
                hooks=hooks,
                example_tokens=per_example,
                validation=validation,
            )
        finally:
            stop.set()
            watcher.cancel()
        trained = base_tokens + outcome.trained_tokens
        if outcome.cancelled:
            await self._finish_stopped(job.id, attempt, trained)
            return
        await self._deploy(job, attempt, info, out / f"epoch-{plan.n_epochs}", trained)

    def _examples(self, content_hash: str) -> list[Any]:
        return [messages for _, messages in read_examples(self.files.path_of(content_hash))]

    async def _watch(self, job_id: str, attempt: int, stop: threading.Event) -> None:
        """Stop the training thread within a second of a cancel (or of another worker taking the job over)."""
        while not stop.is_set():
            await asyncio.sleep(1.0)
            try:
                async with self.db_engine.connect() as conn:
                    row = (await conn.execute(_STATUS, {"id": job_id})).first()
            except Exception as exc:  # the database blinked: keep training, ask again
                log.warning("could not read job %s: %s", job_id, exc)
                continue
            if row is None or row.status != JobStatus.running or row.attempts != attempt:
                stop.set()

    async def _checkpoint(
        self,
        job: FineTuningJob,
        attempt: int,
        epoch: int,
        step: int,
        losses: dict[str, float],
        tokens: int,
        path: Path,
        began: float,
        total_steps: int,
        base_steps: int,
    ) -> None:
        async with self.sessions() as session:
            owned = await self._owned(session, job.id, attempt)
            if owned is None:
                return
            session.add(
                FineTuningCheckpoint(
                    id=f"ftckpt-{job.id[-12:]}-{epoch}",
                    job_id=job.id,
                    epoch=epoch,
                    step=step,
                    trained_tokens=tokens,
                    metrics={**losses, "epoch": epoch},
                    path=str(path),
                )
            )
            per_step = (time.monotonic() - began) / max(step - base_steps, 1)
            owned.estimated_finish = utcnow() + timedelta(seconds=per_step * (total_steps - step))
            add_event(
                session,
                job.id,
                f"Epoch {epoch} done: checkpoint at step {step}, "
                + ", ".join(f"{k.replace('_', ' ')}={v:.4f}" for k, v in losses.items()),
                data={"epoch": epoch, "step": step, **losses},
            )
            await session.commit()

    async def _finish_stopped(self, job_id: str, attempt: int, trained: int) -> None:
        async with self.sessions() as session:
            job = await self._owned(session, job_id, attempt)
            if job is None or job.charged:
                return
            if job.status == JobStatus.running:  # not cancelled: it was taken over, leave it to the new owner
                return
            await ft_billing.settle(session, job, trained, self.settings.billing)
            add_event(session, job_id, f"Training stopped after {trained} trained tokens")
            await session.commit()

    async def _deploy(self, job: FineTuningJob, attempt: int, info: Any, folder: Path, trained: int) -> None:
        name = fine_tuned_name(job)
        async with self.sessions() as session:
            adapter = await adapters.deploy_trained(
                session,
                self.engines,
                self.adapter_store,
                info,
                job.tenant_id,
                name,
                folder,
                job.hyperparameters["lora_rank"],
            )
            if adapter.status != "ready":
                raise JobFailed(f"The trained adapter could not be deployed: {adapter.status_reason}")
            owned = await self._owned(session, job.id, attempt)
            if owned is None or owned.status != JobStatus.running:  # cancelled (or taken over) at the last moment
                if owned is not None and not owned.charged:
                    await ft_billing.settle(session, owned, trained, self.settings.billing)
                    await session.commit()
                await adapters.delete(session, self.engines, self.adapter_store, adapter, Actor("trainer"))
                return
            owned.status = JobStatus.succeeded
            owned.fine_tuned_model = name
            owned.deployment_id = adapter.id
            owned.finished_at = utcnow()
            owned.estimated_finish = None
            await ft_billing.settle(session, owned, trained, self.settings.billing)
            add_event(session, job.id, f"New fine-tuned model created: {name} (deployment {adapter.id})")
            add_event(session, job.id, "The job has successfully completed")
            await session.commit()
        shutil.rmtree(self.workdir / job.id, ignore_errors=True)


def main(settings: Settings, device: str) -> None:
    """`python -m gateway trainer`."""
    asyncio.run(Trainer(settings, device).run())
