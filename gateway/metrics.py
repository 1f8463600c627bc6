"""Every Prometheus collector of the gateway, created by the app (never at import), and their own listener.

Label cardinality is bounded: routes are path templates, `model` is the base model (one per engine),
`kind` tells base from adapter, `engine` is one of the configured engine URLs. A `tenant` label exists only
when METRICS_TENANT_LABELS is on.
`python -m gateway serve` runs prometheus-client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR), one worker or
many: every process writes its samples to that folder, and the listener on METRICS_PORT, a thread of the process
that starts the workers, sums them at each scrape. The API's port has no /metrics: what a scrape shows (engine
URLs, traffic, the billing backlog) is for the operator's network only.

Why MetricsMiddleware and not Litestar's PrometheusMiddleware (litestar.plugins.prometheus, checked in 2.25):
with `PrometheusConfig(prefix="gateway_http", group_path=True)` it does label by path template and keeps its
in-progress gauge `livesum` across processes, but it would change what dashboards and alerts read: the gauge
becomes `gateway_http_requests_in_progress` (ours: `gateway_in_flight_requests`), every series is labelled
`method, path, status_code, app_name` (ours: `route, method, status` on the counter, `route` alone on the
latency histogram and the gauge, so the histogram's buckets are not multiplied by methods and statuses), and
an extra `_requests_error_total` appears. Its collectors also live on prometheus_client's global registry, in a
class attribute shared by every app of the process, not on the registry this app creates, and it builds a
Request object on every proxied call.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import sqlalchemy as sa
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db import is_unavailable
from gateway.settings import MetricsSettings

log = logging.getLogger(__name__)

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_COMMIT = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_ADAPTER_LOAD_RESULTS = ("loaded", "already_loaded", "failed", "unavailable")  # gateway/engine/client.py's


class Metrics:
    def __init__(self, settings: MetricsSettings) -> None:
        self.settings = settings
        self.multiprocess = bool(settings.multiproc_dir)
        r = self.registry = CollectorRegistry()
        extra = ["tenant"] if settings.tenant_labels else []
        self.http_requests = Counter(
            "gateway_http_requests",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=r,
        )  # fmt: skip
        self.http_latency = Histogram(
            "gateway_http_request_duration_seconds", "Whole request time as the client sees it", ["route"],
            buckets=_LATENCY, registry=r,
        )  # fmt: skip
        self.in_flight = Gauge(
            "gateway_in_flight_requests",
            "Requests being served now",
            ["route"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.completions = Counter(
            "gateway_completions", "Completion calls that reached the engine, by outcome",
            ["endpoint", "model", "kind", "status", "stream", *extra], registry=r,
        )  # fmt: skip
        self.tokens = Counter(
            "gateway_tokens", "Tokens metered (committed to the usage table)", ["type", "model", "kind", *extra],
            registry=r,
        )  # fmt: skip
        self.ttft = Histogram(
            "gateway_time_to_first_token_seconds", "Time to the first streamed token", ["endpoint", "kind"],
            buckets=_LATENCY, registry=r,
        )  # fmt: skip
        self.upstream = Histogram(
            "gateway_upstream_duration_seconds", "Time spent waiting on the engine", ["endpoint", "kind"],
            buckets=_LATENCY, registry=r,
        )  # fmt: skip
        self.engine_up = Gauge(
            "gateway_engine_up", "1 if the engine answered its last health check", registry=r, multiprocess_mode="max"
        )
        self.adapter_loads = Counter(
            "gateway_adapter_loads", "Adapter loads into the engine by result", ["result"], registry=r
        )
        for result in _ADAPTER_LOAD_RESULTS:  # shown at 0 from the start (multiprocess mode omits unused series)
            self.adapter_loads.labels(result)
        # Per engine of the pool (the label is the engine's URL: as many series as configured engines).
        self.engine_healthy = Gauge(
            "gateway_engine_healthy", "1 if the engine takes traffic (healthy and its adapters loaded)", ["engine"],
            registry=r, multiprocess_mode="max",
        )  # fmt: skip
        self.engine_in_flight = Gauge(
            "gateway_engine_in_flight_requests", "Requests this gateway has in flight on the engine", ["engine"],
            registry=r, multiprocess_mode="livesum",
        )  # fmt: skip
        self.engine_adapters = Gauge(
            "gateway_engine_adapters_resident", "Adapters this gateway loaded on (or found in) the engine", ["engine"],
            registry=r, multiprocess_mode="max",
        )  # fmt: skip
        self.engine_routed = Counter(
            "gateway_engine_requests_routed", "Calls sent to the engine (a retried call counts once per try)",
            ["engine"], registry=r,
        )  # fmt: skip
        self.outbox_backlog = Gauge(
            "gateway_billing_outbox_backlog", "Invoices waiting to be sent to Stripe", registry=r,
            multiprocess_mode="max",
        )  # fmt: skip
        self.metering_commit = Histogram(
            "gateway_metering_commit_seconds",
            "Durable group commits of the request path (admission: open rows and rate windows; usage: usage rows, "
            "their charges, checkpoints): how long the requests of each waited", ["kind"], buckets=_COMMIT, registry=r,
        )  # fmt: skip
        self.metering_batch = Histogram(
            "gateway_metering_commit_batch_size", "Requests decided (admission) or usage rows written (usage) per "
            "group commit", ["kind"], buckets=_BATCH, registry=r,
        )  # fmt: skip
        self.db_pool_in_use = Gauge(
            "gateway_db_pool_connections_in_use", "Database connections checked out", registry=r,
            multiprocess_mode="livesum",
        )  # fmt: skip
        self.db_pool_size = Gauge(
            "gateway_db_pool_connections", "Database connections open", registry=r, multiprocess_mode="livesum"
        )

    def tenant(self, tenant_id: str) -> list[str]:
        """The extra label values: the tenant id only when per-tenant labels are on."""
        return [tenant_id] if self.settings.tenant_labels else []

    def process_exit(self) -> None:
        if self.multiprocess:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid(), self.settings.multiproc_dir)


class MetricsMiddleware:
    """Counts and times every routed request by its path template (never the raw path)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = scope.get("path_template") or "unmatched"
        status = 500
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        gauge = self.metrics.in_flight.labels(route)
        gauge.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            gauge.dec()
            self.metrics.http_requests.labels(route, scope.get("method", ""), str(status)).inc()
            self.metrics.http_latency.labels(route).observe(time.perf_counter() - start)


async def refresh_gauges(metrics: Metrics, db_engine: AsyncEngine) -> None:
    """Set the gauges no request updates: this process's database pool and the billing outbox backlog."""
    pool: Any = db_engine.pool
    metrics.db_pool_in_use.set(pool.checkedout())
    metrics.db_pool_size.set(pool.checkedin() + pool.checkedout())
    try:
        async with db_engine.connect() as conn:
            backlog = await conn.scalar(sa.text("SELECT count(*) FROM stripe_outbox WHERE status = 'pending'"))
        metrics.outbox_backlog.set(int(backlog or 0))
    except (sa_exc.SQLAlchemyError, OSError) as exc:
        if not is_unavailable(exc):
            raise
        log.info("database unavailable; the outbox gauge keeps its last value")


async def keep_gauges_fresh(metrics: Metrics, db_engine: AsyncEngine) -> None:
    """Refresh the database gauges every METRICS_REFRESH_INTERVAL, so that a scrape never reaches the database."""
    while True:
        try:
            await refresh_gauges(metrics, db_engine)
        except (sa_exc.SQLAlchemyError, OSError):
            log.warning("could not refresh the database gauges; trying again later", exc_info=True)
        await asyncio.sleep(metrics.settings.refresh_interval_s)


def start_listener(settings: MetricsSettings) -> None:
    """Serve every worker process's samples (prometheus-client's multiprocess folder, summed) on METRICS_HOST:
    METRICS_PORT from a thread of this process: the one that starts the workers. Never on the API's port."""
    from prometheus_client import multiprocess, start_http_server

    if not settings.multiproc_dir:
        raise ValueError("the metrics listener reads PROMETHEUS_MULTIPROC_DIR: set it before starting the workers")
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=settings.multiproc_dir)
    start_http_server(settings.port, settings.host, registry)
