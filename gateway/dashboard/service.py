"""What the dashboard shows, built from the admin and usage queries and the billing ledger. Knows nothing of HTTP."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from billing import ledger
from gateway.admin import service as admin
from gateway.db import guarded
from gateway.timeutil import utcnow
from gateway.usage.models import UsageRecord
from gateway.usage.queries import UsageFilter, usage_summary

_TOKENS = ("prompt_tokens", "completion_tokens")


@dataclass(frozen=True)
class Window:
    """A time range and the bucket its chart uses."""

    name: str
    span: timedelta
    bucket: str  # "hour" or "day", as usage_summary groups


WINDOWS = {
    "24h": Window("24h", timedelta(hours=24), "hour"),
    "7d": Window("7d", timedelta(days=7), "day"),
    "30d": Window("30d", timedelta(days=30), "day"),
}


def bucket_keys(window: Window, now: datetime) -> list[str]:
    """Every bucket label in the window, oldest first, in usage_summary's format, so empty hours draw as zero."""
    step = timedelta(hours=1) if window.bucket == "hour" else timedelta(days=1)
    fmt = "%Y-%m-%dT%H:00Z" if window.bucket == "hour" else "%Y-%m-%d"
    end = now.astimezone(UTC)
    t = end - window.span
    keys = []
    while t <= end:
        keys.append(t.strftime(fmt))
        t += step
    return keys


async def series(db: AsyncEngine, window: Window, tenant_id: str | None = None) -> dict[str, list[Any]]:
    """Prompt tokens, completion tokens, cost (micro-minor units) and requests per bucket, zero-filled."""
    now = utcnow()
    f = UsageFilter(tenant_id=tenant_id, start=now - window.span)
    rows = {r[window.bucket]: r for r in await usage_summary(db, f, [window.bucket])}
    keys = bucket_keys(window, now)
    empty = {"prompt_tokens": 0, "completion_tokens": 0, "cost_micros": 0, "requests": 0, "errors": 0}
    picked = [rows.get(k, empty) for k in keys]
    return {
        "labels": keys,
        **{name: [r[name] for r in picked] for name in ("prompt_tokens", "completion_tokens", "cost_micros",
                                                         "requests", "errors")},
    }  # fmt: skip


def _tokens(row: dict[str, Any]) -> int:
    return int(row["prompt_tokens"]) + int(row["completion_tokens"])


async def overview(db: AsyncEngine, window: Window, limit: int = 8) -> dict[str, Any]:
    """Everything on the overview page: the time series, top tenants and models, totals, live counts, tenants."""
    now = utcnow()
    since = UsageFilter(start=now - window.span)
    tenants = await admin.list_tenants(db)
    names = {t["id"]: t["name"] for t in tenants}
    deployments = {d["id"]: d for d in await admin.list_deployments(db)}

    by_tenant = sorted(await usage_summary(db, since, ["tenant"]), key=_tokens, reverse=True)
    by_model = sorted(await usage_summary(db, since, ["model"]), key=_tokens, reverse=True)
    totals = {k: sum(int(r[k]) for r in by_tenant) for k in ("requests", "errors", *_TOKENS, "cost_micros")}
    usage_by_tenant = {r["tenant_id"]: r for r in by_tenant}
    for t in tenants:
        t["usage"] = usage_by_tenant.get(t["id"])
    return {
        "series": await series(db, window),
        "top_tenants": [{**r, "name": names.get(r["tenant_id"], r["tenant_id"]), "tokens": _tokens(r)}
                        for r in by_tenant[:limit]],
        "top_models": [_model_row(r, deployments, names) for r in by_model[:limit]],
        "totals": totals,
        "error_rate": totals["errors"] / totals["requests"] if totals["requests"] else 0.0,
        "live": await live(db),
        "tenants": tenants,
    }  # fmt: skip


def _model_row(row: dict[str, Any], deployments: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    dep = deployments.get(row["model"])
    label = f"{dep['name']} ({names.get(dep['tenant_id'], dep['tenant_id'])})" if dep else row["model"]
    return {**row, "label": label, "is_adapter": dep is not None, "tokens": _tokens(row)}


async def live(db: AsyncEngine) -> dict[str, int]:
    """Requests finished in the last minute and the last five minutes, from the usage rows."""
    now = utcnow()
    out = {}
    for name, span in (("last_minute", timedelta(seconds=60)), ("last_5_minutes", timedelta(minutes=5))):
        rows = await usage_summary(db, UsageFilter(start=now - span), [])
        out[name] = int(rows[0]["requests"]) if rows else 0
    return out


def in_flight(state: Any) -> int | None:
    """HOOK: model requests being served right now, from the in-flight gauge of `app.state.metrics` if there is one.

    Read through prometheus_client's public collect(); None (the page then shows the usage-based counts only)
    when the app has no metrics object or it has no such gauge. Nothing else here depends on it. In multi-worker
    mode this is this worker's count only.
    """
    gauge = getattr(state.get("metrics") if hasattr(state, "get") else None, "in_flight", None)
    if gauge is None or not hasattr(gauge, "collect"):
        return None
    return int(
        sum(s.value for m in gauge.collect() for s in m.samples if s.labels.get("route", "").startswith(_MODEL_ROUTES))
    )


_MODEL_ROUTES = ("/v1/chat/", "/v1/completions", "/maas/")


async def tenant_page(db: AsyncEngine, tenant_id: str, window: Window, recent: int = 50) -> dict[str, Any]:
    """One tenant: its state and balance, keys, deployments, recent requests and usage over time."""
    tenant = await admin.get_tenant(db, tenant_id)  # NotFound for an unknown id
    async with guarded(), db.connect() as conn:
        balance = await ledger.balance(conn, tenant_id)
    return {
        "tenant": tenant,
        "balance": balance,
        "keys": await admin.list_keys(db, tenant_id),
        "deployments": await admin.list_deployments(db, tenant_id),
        "recent": await recent_requests(db, tenant_id, recent),
        "series": await series(db, window, tenant_id),
        "totals": (await usage_summary(db, UsageFilter(tenant_id=tenant_id, start=utcnow() - window.span), []))[0],
    }


async def recent_requests(db: AsyncEngine, tenant_id: str, limit: int) -> list[dict[str, Any]]:
    """The tenant's last requests, newest first."""
    u = UsageRecord
    stmt = (
        sa.select(*(col(c) for c in (u.request_id, u.started_at, u.model, u.adapter_id, u.api_key_id, u.endpoint,
                  u.stream, u.prompt_tokens, u.completion_tokens, u.status, u.http_status, u.latency_ms)))
        .where(col(u.tenant_id) == tenant_id)
        .order_by(col(u.started_at).desc(), col(u.id).desc())
        .limit(limit)
    )  # fmt: skip
    async with guarded(), db.connect() as conn:
        return [dict(r._mapping) for r in await conn.execute(stmt)]
