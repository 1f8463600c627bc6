"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from litestar import Response, get
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db import is_unavailable
from gateway.engine.pool import EnginePool


@get("/healthz", tags=["Health"])
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@get("/readyz", tags=["Health"])
async def readyz(db_engine: AsyncEngine, engines: EnginePool) -> Response[dict[str, Any]]:
    """The database is reachable and at least one engine takes traffic."""
    checks: dict[str, str] = {}
    try:
        async with db_engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        checks["database"] = "unavailable"
    checks["engine"] = "ok" if await engines.ready() else "unavailable"
    ready = all(v == "ok" for v in checks.values())
    return Response({"status": "ready" if ready else "not_ready", "checks": checks}, status_code=200 if ready else 503)
