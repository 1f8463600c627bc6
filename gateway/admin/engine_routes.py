"""Admin API for the engine pool: which engines there are and how each one is doing, as this process sees it."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
from litestar import Controller, get

from gateway.admin.guard import admin_guard
from gateway.engine.pool import EnginePool, Member


class EnginePublic(msgspec.Struct):
    url: str
    base_model: str | None
    max_model_len: int | None
    healthy: bool  # takes traffic: answered its health check and holds the adapters it should
    in_flight: int  # requests this gateway process has on it now
    adapters_resident: int
    adapters: list[str]  # deployment ids this process loaded on it or found there
    since: datetime  # when `healthy` last changed
    last_error: str | None

    @classmethod
    def of(cls, m: Member) -> EnginePublic:
        return cls(
            url=m.url,
            base_model=m.base_model,
            max_model_len=m.info.max_model_len if m.info else None,
            healthy=m.up,
            in_flight=m.in_flight,
            adapters_resident=len(m.resident),
            adapters=sorted(m.resident),
            since=datetime.fromtimestamp(m.since, UTC),
            last_error=m.last_error,
        )


class EngineList(msgspec.Struct):
    data: list[EnginePublic]
    object: str = "list"


class AdminEngineController(Controller):
    path = "/admin/engines"
    guards = [admin_guard]
    tags = ["Admin"]

    @get("/")
    async def list_engines(self, engines: EnginePool) -> EngineList:
        """The engine pool: URL, base model, healthy, in-flight requests and resident adapters of each engine."""
        return EngineList(data=[EnginePublic.of(m) for m in engines.members])
