"""The engines behind the gateway: what each serves, which are healthy, where a call goes, which adapters each holds.

An engine takes traffic only once it is *up*: it answered /health, told us its base model (/v1/models), ran a
one-token completion and was given the ready adapters it should hold. A failed health check or a refused
connection takes it out at once; the health watch brings it back through the same steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from gateway.engine import routing
from gateway.engine.client import EngineClient, EngineInfo, EngineModelMissing
from gateway.errors import EngineError, EngineRejected, EngineUnavailable, GatewayError
from gateway.metrics import Metrics
from gateway.settings import EngineSettings

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class AdapterRef:
    """An adapter as the engine knows it: its deployment id (the engine's model name) and its folder."""

    id: str
    path: str


ReadyAdapters = Callable[[str], Awaitable[Sequence[AdapterRef]]]  # base model → its ready adapters


@dataclass(eq=False)
class Member:
    """One engine of the pool, as this gateway process sees it."""

    client: EngineClient
    info: EngineInfo | None = None
    up: bool = False
    in_flight: int = 0
    resident: set[str] = field(default_factory=set)  # adapters we loaded on it or found there
    last_error: str | None = None
    since: float = field(default_factory=time.time)  # when `up` last changed
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    slow_checks: int = 0  # health checks in a row that got no answer in time

    @property
    def url(self) -> str:
        return self.client.url

    @property
    def base_model(self) -> str | None:
        return self.info.base_model if self.info else None


STARTUP_GRACE_S = 15.0
CALL_RETRIES = 3  # a call whose connection broke, on an engine that still answers its health check
# Held around one adapter load on one engine; the app passes a lock shared by every gateway process.
LoadGuard = Callable[[str, str], contextlib.AbstractAsyncContextManager[Any]]


class EnginePool:
    def __init__(
        self,
        settings: EngineSettings,
        metrics: Metrics,
        ready_adapters: ReadyAdapters,
        load_guard: LoadGuard | None = None,
    ) -> None:
        urls = settings.pool_urls()
        if not urls:
            raise ValueError("ENGINE_URL or ENGINE_URLS must name at least one engine")
        self.settings = settings
        self.metrics = metrics
        self._ready_adapters = ready_adapters
        self._load_guard: LoadGuard = load_guard or (lambda engine_url, adapter_id: contextlib.nullcontext())
        on_load = metrics.adapter_loads.labels
        self.members = [Member(EngineClient(settings, on_adapter_load=lambda r: on_load(r).inc(), url=u)) for u in urls]
        for m in self.members:
            metrics.engine_healthy.labels(m.url).set(0)
        self._watchers: list[asyncio.Task[None]] = []
        self._any_up = asyncio.Event()  # set the first time an engine is up in this process
        self._started = time.monotonic()

    # --- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> None:
        """Watch every engine's health in the background (this also brings each one up the first time)."""
        self._watchers = [asyncio.create_task(self._watch(m), name=f"engine-watch {m.url}") for m in self.members]

    async def aclose(self) -> None:
        for task in self._watchers:
            task.cancel()
        for task in self._watchers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for m in self.members:
            await m.client.aclose()

    async def _watch(self, m: Member) -> None:
        while True:
            verdict = await m.client.health()
            m.slow_checks = m.slow_checks + 1 if verdict == "slow" else 0
            if verdict == "down":
                self.mark_down(m, "health check failed")
            elif m.slow_checks >= self.settings.health_failures:
                self.mark_down(m, f"no health answer {m.slow_checks} times in a row")
            elif verdict == "ok" and not m.up:
                try:
                    await self._bring_up(m)
                except GatewayError as exc:  # the engine failed, or the database to list its adapters
                    self.mark_down(m, exc.message)
            await asyncio.sleep(self.settings.health_interval_s)

    async def _bring_up(self, m: Member) -> None:
        """Discover what the engine serves, check it generates, give it its adapters, then let traffic in."""
        info, loaded = await m.client.discover()
        await m.client.post("/v1/completions", {"model": info.base_model, "prompt": "hi", "max_tokens": 1})
        known_before = set(m.resident)
        m.info, m.resident = info, set(loaded)
        peers = [p for p in self.members if p.base_model == info.base_model]
        count = 0
        for adapter in await self._ready_adapters(info.base_model):
            if adapter.id in known_before or routing.home(adapter.id, peers) is m:
                try:
                    await self._ensure_loaded(m, adapter)
                except EngineRejected as exc:  # that adapter is broken; the engine is fine
                    log.warning("engine %s refused adapter %s: %s", m.url, adapter.id, exc.message)
                    continue
                count += 1
        self.metrics.engine_adapters.labels(m.url).set(len(m.resident))
        self._set_up(m, True)
        log.info("engine %s is up: serves %s, %d adapters loaded for it", m.url, info.base_model, count)

    def mark_down(self, m: Member, reason: str) -> None:
        """Take an engine out of routing now; the watch brings it back when it answers again."""
        m.last_error = reason
        if m.up:
            log.warning("engine %s is down: %s", m.url, reason)
            self._set_up(m, False)

    def _set_up(self, m: Member, up: bool) -> None:
        m.up, m.since = up, time.time()
        if up:
            m.last_error = None
            self._any_up.set()
        self.metrics.engine_healthy.labels(m.url).set(1 if up else 0)
        self.metrics.engine_up.set(1 if any(x.up for x in self.members) else 0)

    # --- what the pool serves ------------------------------------------------------------------------------

    async def bases(self) -> frozenset[str]:
        """The base models the pool's engines serve (asking the engines if none has answered yet)."""
        known = frozenset(m.base_model for m in self.members if m.base_model)
        if known:
            return known
        await self._discover_all()
        known = frozenset(m.base_model for m in self.members if m.base_model)
        if not known:
            raise EngineUnavailable()
        return known

    async def max_model_len(self) -> int:
        """The longest context any engine in the pool serves (the door's bound before the model is resolved)."""
        await self.bases()
        return max((m.info.max_model_len for m in self.members if m.info is not None), default=0)

    async def info(self, base_model: str | None = None) -> EngineInfo:
        """What the engines serving `base_model` (default: the first base model) report."""
        bases = await self.bases()
        wanted = base_model or min(bases)
        for m in self.members:
            if m.info is not None and m.info.base_model == wanted:
                return m.info
        raise EngineUnavailable(f"No engine serving {wanted!r} is available; retry shortly.")

    async def _discover_all(self) -> None:
        async def one(m: Member) -> None:
            with contextlib.suppress(EngineError):
                m.info, _ = await m.client.discover()

        await asyncio.gather(*(one(m) for m in self.members if m.info is None))

    async def ready(self) -> bool:
        """At least one engine is up and answers its health check right now."""
        up = [m for m in self.members if m.up]
        answers = await asyncio.gather(*(m.client.health() for m in up))
        for m, verdict in zip(up, answers, strict=True):
            if verdict == "down":
                self.mark_down(m, "health check failed")
        return "ok" in answers

    # --- routing -------------------------------------------------------------------------------------------

    def choose(self, base_model: str, adapter_id: str | None, exclude: Sequence[Member] = ()) -> Member:
        """The engine for a call: the adapter's rendezvous choice under the load bound, else the least loaded."""
        live = [m for m in self.members if m.up and m.base_model == base_model and m not in exclude]
        if not live:
            raise EngineUnavailable(f"No engine serving {base_model!r} is available; retry shortly.")
        if adapter_id is None:
            return routing.pick_least_loaded(live)
        return routing.pick_for_adapter(adapter_id, live, self.settings.load_factor, self.settings.load_floor)

    async def send(
        self,
        base_model: str,
        adapter: AdapterRef | None,
        call: Callable[[EngineClient], Awaitable[T]],
        held: contextlib.AsyncExitStack,
    ) -> tuple[Member, T]:
        """Run `call` on the chosen engine, loading the adapter there first if it lacks it. A call whose
        connection broke before any answer is followed by a health check on a fresh connection: an engine that
        fails it is marked down and the call goes to the next one; one that passes it may get the call again (up
        to CALL_RETRIES times). The engine's in-flight count is held until `held` closes (for a stream: when the
        relay ends)."""
        await self._startup_grace()
        tried: list[Member] = []
        retries = 0
        broken: EngineUnavailable | None = None
        while True:
            try:
                m = self.choose(base_model, adapter.id if adapter else None, tried)
            except EngineUnavailable:
                if broken is None:
                    raise
                raise broken from broken.__cause__  # the connection broke (the engine may well be there)
            tried.append(m)
            self._acquire(m)
            try:
                result = await self._call_on(m, adapter, call)
            except EngineUnavailable as exc:
                self._release(m)
                broken = exc
                # A connection that broke is not yet a dead engine (a kept-alive one can be stale after this
                # process was held back): ask it on a fresh one. Only a failed check takes it out; one that
                # answers at once may get the call again (routing picks anew); a slow one is left alone.
                verdict = await m.client.health()
                if verdict == "down":
                    self.mark_down(m, "connection failed")
                elif verdict == "ok" and retries < CALL_RETRIES:
                    tried.remove(m)
                    retries += 1
                log.info("call for %s moves off %s: %s", adapter.id if adapter else base_model, m.url, exc.message)
                continue
            except BaseException:
                self._release(m)
                raise
            held.callback(self._release, m)
            return m, result

    async def _startup_grace(self) -> None:
        """A process that has just started (one worker of several, say) waits for its first engine to come up
        instead of refusing the calls that reach it meanwhile."""
        if self._any_up.is_set():
            return
        left = self._started + STARTUP_GRACE_S - time.monotonic()
        if left > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._any_up.wait(), left)

    async def _call_on(self, m: Member, adapter: AdapterRef | None, call: Callable[[EngineClient], Awaitable[T]]) -> T:
        if adapter is not None and adapter.id not in m.resident:
            await self._ensure_loaded(m, adapter)
        try:
            return await call(m.client)
        except EngineModelMissing:
            if adapter is None:
                raise
            log.info("engine %s lost adapter %s; reloading", m.url, adapter.id)
            m.resident.discard(adapter.id)
            await self._ensure_loaded(m, adapter)
            return await call(m.client)

    def _acquire(self, m: Member) -> None:
        m.in_flight += 1
        self.metrics.engine_in_flight.labels(m.url).inc()
        self.metrics.engine_routed.labels(m.url).inc()

    def _release(self, m: Member) -> None:
        m.in_flight -= 1
        self.metrics.engine_in_flight.labels(m.url).dec()

    # --- adapters on engines -------------------------------------------------------------------------------

    async def _ensure_loaded(self, m: Member, adapter: AdapterRef) -> None:
        """Load the adapter on this engine unless it is known to be there; one load at a time per engine and
        adapter in this process (the engine's "already loaded" answer covers other processes)."""
        lock = m.locks.setdefault(adapter.id, asyncio.Lock())
        async with lock:
            if adapter.id in m.resident:
                return
            async with self._load_guard(m.url, adapter.id):  # the other gateway processes wait, then find it there
                await m.client.load_adapter(adapter.id, adapter.path)
            m.resident.add(adapter.id)
            self.metrics.engine_adapters.labels(m.url).set(len(m.resident))

    async def load_new(self, base_model: str, adapter: AdapterRef) -> None:
        """Load a newly deployed adapter on the engine its traffic will go to (its errors are the engine's)."""
        m = self.choose(base_model, adapter.id)
        try:
            await self._ensure_loaded(m, adapter)
        except EngineUnavailable:
            self.mark_down(m, "connection failed")
            raise

    async def unload_everywhere(self, adapter_id: str) -> None:
        """Remove an adapter from every engine that answers; one that does not forgets it when it restarts."""
        for m in self.members:
            if not m.up:
                m.resident.discard(adapter_id)
                continue
            try:
                await m.client.unload_adapter(adapter_id)
            except EngineError as exc:
                log.warning("could not unload %s from %s: %s", adapter_id, m.url, exc.message)
            m.resident.discard(adapter_id)
            m.locks.pop(adapter_id, None)
            self.metrics.engine_adapters.labels(m.url).set(len(m.resident))
