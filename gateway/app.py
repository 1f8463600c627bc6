"""create_app(settings) -> Litestar. Nothing is created at import time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from sqlmodel.ext.asyncio.session import AsyncSession

from billing import ledger, stripe_sync
from billing.admission import Admission
from billing.ledger import AccountDefaults
from gateway import db
from gateway.accounts.routes import AdminBillingController, TenantBillingController
from gateway.accounts.webhooks import stripe_webhook
from gateway.adapters import service as adapters
from gateway.adapters.load_lock import load_lock
from gateway.adapters.routes import AdapterController
from gateway.adapters.service import TargetCache
from gateway.adapters.slots import UploadSlots
from gateway.adapters.storage import AdapterStore
from gateway.admin.engine_routes import AdminEngineController
from gateway.admin.routes import AdminController
from gateway.admin.signup_routes import AdminSignupController
from gateway.admin.usage_routes import AdminUsageController
from gateway.admin.users_routes import AdminUsersController
from gateway.admission.limits import Grant, RateLimiter
from gateway.admission.open_requests import OpenRequests
from gateway.admission.stopwatch import Observer
from gateway.auth.dependencies import provide_caller
from gateway.auth.service import KeyCache
from gateway.cache import Invalidations
from gateway.console.routes import console_routes
from gateway.csrf import csrf_middleware
from gateway.dashboard.routes import dashboard_routes, template_config
from gateway.engine.pool import EnginePool
from gateway.errors import DatabaseUnavailable
from gateway.files.routes import FileController
from gateway.files.storage import BlobStore
from gateway.fine_tuning.routes import FineTuningController
from gateway.health.routes import healthz, readyz
from gateway.http_errors import EXCEPTION_HANDLERS
from gateway.keys.routes import KeysController
from gateway.metrics import Metrics, MetricsMiddleware, keep_gauges_fresh
from gateway.payments.jobs import run_worker as run_payments_worker
from gateway.payments.routes import AdminPaymentsController, PaymentsController
from gateway.proxy.routes import MaasController, OpenAIController
from gateway.proxy.service import ProxyService
from gateway.settings import Settings
from gateway.uploads.routes import UploadController
from gateway.usage.instances import Instance, new_instance_id
from gateway.usage.writer import UsageWriter

log = logging.getLogger(__name__)


def account_defaults(settings: Settings) -> AccountDefaults:
    b = settings.billing
    return AccountDefaults(mode=b.default_mode, trial_tokens=b.trial_tokens, currency=b.currency, period=b.period)


def _observer(metrics: Metrics, kind: str) -> Observer:
    seconds, sizes = metrics.metering_commit.labels(kind), metrics.metering_batch.labels(kind)

    def observe(took: float, items: int) -> None:
        seconds.observe(took)
        sizes.observe(items)

    return observe


async def _prune_rate_counters(limiter: RateLimiter, every_s: float = 60.0) -> None:
    """Drop rate-limit windows older than a few minutes."""
    while True:
        await asyncio.sleep(every_s)
        try:
            await limiter.prune()
        except DatabaseUnavailable:
            log.info("database unavailable; rate counters pruned next time")


def _lifespan(settings: Settings, metrics: Metrics) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        db_engine = db.create_engine(settings.database)
        metering = await db.create_pool(settings.database)
        # The pool's health watch brings each engine up (its adapters loaded) before it takes traffic.
        engines = EnginePool(
            settings.engine, metrics, lambda base: adapters.ready_on(db_engine, base), load_lock(db_engine)
        )
        engines.start()
        defaults = account_defaults(settings)
        writer = UsageWriter(
            metering,
            on_commit=lambda conn, rows: ledger.charge_usage(conn, rows, defaults),
            observe=_observer(metrics, "usage"),
        )
        admission = Admission(defaults)
        open_requests = OpenRequests(metering, admission, new_instance_id(), observe=_observer(metrics, "admission"))
        limiter = RateLimiter(metering)
        writer.on_closed = open_requests.closed

        def abandoned(request_id: str, grant: Grant) -> None:  # admitted, but its client left before it knew
            writer.discard_later(request_id)
            limiter.settle(grant, 0)

        open_requests.on_abandoned = abandoned
        instance = Instance(metering, open_requests, writer, settings.server.instance_timeout_s)
        await instance.register()  # before any request is admitted: our open rows are never taken for orphans
        channel = Invalidations(settings.database.plain_url())
        listener = asyncio.create_task(channel.run(), name="cache-invalidations")
        ttl = settings.server.cache_ttl_s
        heartbeat = asyncio.create_task(instance.run(), name="instance-heartbeat")
        prune = asyncio.create_task(_prune_rate_counters(limiter), name="rate-counter-prune")
        gauges = asyncio.create_task(keep_gauges_fresh(metrics, db_engine), name="metrics-gauges")
        stripe_worker = (
            asyncio.create_task(stripe_sync.run_forever(db_engine, settings.billing), name="stripe-sync")
            if settings.billing.stripe_api_key is not None
            else None
        )
        payments_worker = (
            asyncio.create_task(run_payments_worker(db_engine, settings), name="payments-worker")
            if settings.billing.stripe_api_key is not None
            else None
        )
        app.state.update(
            db_engine=db_engine,
            sessions=db.session_factory(db_engine),
            engines=engines,
            writer=writer,
            key_cache=KeyCache(channel, ttl),
            proxy=ProxyService(
                db_engine,
                engines,
                writer,
                open_requests,
                metrics,
                limiter,
                settings.server.checkpoint_interval_s,
                TargetCache(channel, ttl),
            ),
            adapter_store=AdapterStore(settings.storage.data_dir / "adapters"),
            upload_slots=UploadSlots(
                settings.adapters.max_concurrent_uploads_per_tenant, settings.adapters.max_concurrent_uploads
            ),
            file_store=BlobStore(settings.storage.data_dir / "files"),
        )
        try:
            yield
        finally:
            prune.cancel()
            gauges.cancel()
            listener.cancel()
            if stripe_worker is not None:
                stripe_worker.cancel()
            if payments_worker is not None:
                payments_worker.cancel()
            await writer.stop()
            await limiter.flush()
            heartbeat.cancel()
            try:
                await instance.goodbye()
            except Exception:  # the others notice our silence instead
                log.warning("could not sign off from the database; other processes will settle our leftovers")
            await engines.aclose()
            await metering.close()
            await db_engine.dispose()
            metrics.process_exit()

    return lifespan


async def _provide_session(state: State) -> AsyncIterator[AsyncSession]:
    # Connection failures inside the handler reach the error table (database errors → 503 there).
    async with state.sessions() as session:
        yield session


def _from_state(name: str) -> Provide:
    def provider(state: State) -> Any:
        return state[name]

    return Provide(provider, sync_to_thread=False)


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or Settings()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per engine call is noise
    metrics = Metrics(settings.metrics)
    return Litestar(
        route_handlers=[
            healthz,
            readyz,
            OpenAIController,
            MaasController,
            AdapterController,
            FileController,
            FineTuningController,
            UploadController,
            KeysController,
            TenantBillingController,
            AdminController,
            AdminSignupController,
            AdminUsersController,
            AdminEngineController,
            AdminBillingController,
            stripe_webhook,
            PaymentsController,
            AdminPaymentsController,
            AdminUsageController,
            *dashboard_routes(settings),
            *console_routes(),
        ],
        lifespan=[_lifespan(settings, metrics)],
        middleware=[DefineMiddleware(MetricsMiddleware, metrics=metrics), csrf_middleware(settings)],
        state=State({"settings": settings, "metrics": metrics}),
        dependencies={
            "db_engine": _from_state("db_engine"),
            "engines": _from_state("engines"),
            "proxy": _from_state("proxy"),
            "adapter_store": _from_state("adapter_store"),
            "file_store": _from_state("file_store"),
            "settings": _from_state("settings"),
            "db_session": Provide(_provide_session),
            "caller": provide_caller,
        },
        exception_handlers=EXCEPTION_HANDLERS,
        request_max_body_size=settings.server.max_body_bytes,
        template_config=template_config(),
        openapi_config=OpenAPIConfig(title="LoRA gateway", version="0.1.0"),
    )
