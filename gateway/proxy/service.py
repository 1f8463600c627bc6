"""Forward one OpenAI call to the engine under the tenant's adapter and meter it. Knows nothing of HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import anyio
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway import ids
from gateway.adapters import service as adapters
from gateway.adapters.service import Target, TargetCache
from gateway.admission.limits import Grant, RateLimiter
from gateway.admission.open_requests import Opening, OpenRequests
from gateway.auth.service import Caller
from gateway.db import guarded
from gateway.engine.client import stream_error
from gateway.engine.pool import EnginePool
from gateway.errors import EngineError, GatewayError
from gateway.metrics import Metrics
from gateway.proxy.sse import DONE, RunningUsage, Tokens, error_event, renamer, take_usage, tokens_of
from gateway.timeutil import utcnow
from gateway.usage.models import UsageStatus, usage_row
from gateway.usage.writer import UsageWriter

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Call:
    """One client request on its way through the gateway."""

    caller: Caller
    endpoint: str
    body: dict[str, Any]
    client_model: str
    target: Target
    stream: bool
    wants_usage: bool
    grant: Grant
    wants_running_usage: bool = False
    request_id: str = field(default_factory=ids.request_id)
    started_at: datetime = field(default_factory=utcnow)
    clock: float = field(default_factory=time.perf_counter)
    used_tokens: int = 0
    metered: bool = False  # its usage row is handed to the writer (committed, or committed once the DB is back)
    engine: str | None = None  # URL of the engine that serves it, once chosen

    @property
    def kind(self) -> str:
        return "base" if self.target.adapter_id is None else "adapter"


@dataclass(slots=True)
class Relay:
    """An engine stream on its way to the client."""

    call: Call
    stack: contextlib.AsyncExitStack
    running: RunningUsage  # what the engine had produced by the last chunk relayed
    events: AsyncGenerator[bytes, None] = None  # type: ignore[assignment]  # set right after construction
    status: UsageStatus = UsageStatus.CLIENT_CLOSED  # how it ended, if it ended without its final usage
    closed: bool = False
    next_mark: float = 0.0  # when the running usage may be checkpointed again (the first one: at once)
    late_mark: asyncio.TimerHandle | None = None  # a checkpoint due at next_mark for chunks relayed before it


class ProxyService:
    def __init__(
        self,
        db: AsyncEngine,
        engines: EnginePool,
        writer: UsageWriter,
        open_requests: OpenRequests,
        metrics: Metrics,
        limiter: RateLimiter,
        checkpoint_interval_s: float = 1.0,
        targets: TargetCache | None = None,
    ) -> None:
        self.targets = targets
        self.limiter = limiter
        self.db = db
        self.engines = engines
        self.writer = writer
        self.open_requests = open_requests
        self.metrics = metrics
        self.checkpoint_interval_s = checkpoint_interval_s

    async def prepare(self, caller: Caller, endpoint: str, body: dict[str, Any], model: str, body_bytes: int) -> Call:
        """Resolve `model` within the caller's tenant, admit it against its limits and quota (committing its
        open row), build the engine's body."""
        target = await adapters.resolve(self.db, await self.engines.bases(), caller.tenant_id, model, self.targets)
        info = await self.engines.info(target.base_model)
        worst_case = _worst_case_tokens(body, body_bytes, info.max_model_len)
        stream = bool(body.get("stream"))
        opening = Opening(
            ids.request_id(), caller.tenant_id, caller.key_id, model, target.base_model, target.adapter_id,
            endpoint, stream,
        )  # fmt: skip
        async with guarded():
            started_at, grant = await self.open_requests.open(opening, caller.limits, worst_case)
        wants_usage = wants_running = False
        if stream:
            options = body.get("stream_options")
            options = dict(options) if isinstance(options, dict) else {}
            wants_usage = bool(options.get("include_usage"))
            wants_running = bool(options.get("continuous_usage_stats"))
            # Running usage in every chunk: a stream that breaks or is abandoned is billed what it produced.
            options["continuous_usage_stats"] = True
            # Always ask for the usage chunk: it is what we meter; it is stripped again if unwanted.
            options["include_usage"] = True
            body["stream_options"] = options
        body["model"] = target.engine_model
        return Call(
            caller, endpoint, body, model, target, stream, wants_usage, grant, wants_running,
            request_id=opening.request_id, started_at=started_at,
        )  # fmt: skip

    async def complete(self, call: Call) -> dict[str, Any]:
        """A non-streaming call; returns the engine's answer once its usage is committed."""
        try:
            try:
                answer = await self._with_reload(call, lambda engine: engine.post(call.endpoint, call.body))
                self.metrics.upstream.labels(call.endpoint, call.kind).observe(time.perf_counter() - call.clock)
            except EngineError as exc:
                await self._record_failure(call, exc)
                raise
            usage = answer.get("usage") or {}
            await self._record(call, tokens_of(usage), UsageStatus.OK, 200)
        finally:
            await self._settle(call)
        answer["model"] = call.client_model
        return answer

    async def open_stream(self, call: Call) -> Relay:
        """Open the engine stream now (so its errors become HTTP errors); relay.events relays it event by event.
        The caller must make sure finish(relay) runs once the response is over (see finish)."""
        stack = contextlib.AsyncExitStack()
        try:
            events = await self._with_reload(
                call, lambda engine: stack.enter_async_context(engine.stream(call.endpoint, call.body)), stack
            )
        except BaseException as exc:  # an engine error, or no engine call at all (database down, client gone)
            await stack.aclose()
            try:
                if isinstance(exc, EngineError):
                    await self._record_failure(call, exc)
            finally:
                await self._settle(call)  # else its open row stays, excluded from sweeps while this process lives
            raise
        relay = Relay(call, stack, RunningUsage(call.body))
        relay.events = self._relay(relay, events)
        return relay

    async def finish(self, relay: Relay) -> None:
        """After the response: close the relay if the client left before the generator ran to its end, or
        before it even started (a generator that never started runs no `finally`)."""
        await relay.events.aclose()
        await self._close(relay)

    async def _relay(self, relay: Relay, events: AsyncIterator[list[bytes]]) -> AsyncGenerator[bytes, None]:
        call = relay.call
        rename = renamer(call.target.engine_model, call.client_model)
        first = True
        try:
            async for batch in events:
                out = []
                for event in batch:
                    if first and b'"content"' in event:
                        first = False
                        self.metrics.ttft.labels(call.endpoint, call.kind).observe(time.perf_counter() - call.clock)
                    if event == DONE:
                        relay.status = UsageStatus.OK
                    elif (failed := stream_error(event)) is not None:  # the engine gave up midway
                        log.warning("engine stream failed: %s", failed.message)
                        event = error_event(failed).rstrip()
                    elif b'"usage"' in event:
                        final = b'"choices":[]' in event
                        tokens, event = take_usage(event, keep=final or call.wants_running_usage)
                        if tokens is not None and final:
                            self.metrics.upstream.labels(call.endpoint, call.kind).observe(
                                time.perf_counter() - call.clock
                            )
                            # Committed before the client sees the end of the stream (the write below).
                            await self._record(call, tokens, UsageStatus.OK, 200)
                            if not call.wants_usage:
                                continue
                        elif tokens is not None:
                            # Every event of this read goes to the client in the write below: the running usage
                            # billed on a hang-up is the engine's as of the last chunk handed to the client.
                            relay.running.update(event, tokens)
                            self._checkpoint(relay)
                    out.append(rename(event))
                    out.append(b"\n\n")
                if out:
                    yield b"".join(out)  # one write for what one read from the engine brought
            if not call.metered:
                relay.status = UsageStatus.ENGINE_ERROR
        except EngineError as exc:
            relay.status = UsageStatus.ENGINE_ERROR
            log.warning("engine stream broke: %s", exc.message)
            yield error_event(exc)
        finally:
            await self._close(relay)

    def _checkpoint(self, relay: Relay) -> None:
        """Save the stream's running usage (what a crash would leave to bill) at most once per interval, and
        no later than one interval after a chunk: a stream that goes quiet after a burst (the engine preempts
        it, or a slow client holds it back) has its last relayed total saved too, not just an older one."""
        now = time.monotonic()
        if now >= relay.next_mark:
            relay.next_mark = now + self.checkpoint_interval_s
            total = relay.running.total
            self.writer.checkpoint(relay.call.request_id, total.prompt, total.completion)
        elif relay.late_mark is None:
            relay.late_mark = asyncio.get_running_loop().call_later(relay.next_mark - now, self._late_mark, relay)

    def _late_mark(self, relay: Relay) -> None:
        relay.late_mark = None
        if not relay.closed and not relay.call.metered:
            self._checkpoint(relay)

    async def _close(self, relay: Relay) -> None:
        """Once per relay: close the engine stream (the engine aborts an unfinished generation), meter what the
        engine had produced if nothing was metered yet, settle. A client that hangs up cancels the relay
        (Litestar cancels its task group), so this runs shielded from that cancellation."""
        if relay.closed:
            return
        relay.closed = True
        if relay.late_mark is not None:
            relay.late_mark.cancel()
        call = relay.call
        with anyio.CancelScope(shield=True):
            await relay.stack.aclose()
            try:
                if not call.metered:
                    with contextlib.suppress(GatewayError):
                        await self._record(call, relay.running.total, relay.status, 200)
            finally:
                await self._settle(call)

    async def _settle(self, call: Call) -> None:
        """The call is over: close its open row if no usage row did, and correct its rate-limit tokens."""
        try:
            if not call.metered:
                with contextlib.suppress(GatewayError):  # left open, a sweep settles it later
                    await asyncio.shield(asyncio.ensure_future(self.writer.discard(call.request_id)))
        finally:
            self.limiter.settle(call.grant, call.used_tokens)

    async def _with_reload(self, call: Call, send: Any, held: contextlib.AsyncExitStack | None = None) -> Any:
        """Send on the engine the pool picks for this call. The pool loads the adapter there if that engine lacks
        it (again, once, if the engine forgot it) and moves on to another engine if it refuses connections. The
        engine counts the call in flight until `held` closes (default: when the answer is in)."""
        async with contextlib.AsyncExitStack() as own:
            engine, result = await self.engines.send(call.target.base_model, call.target.adapter, send, held or own)
        call.engine = engine.url
        return result

    async def _record(self, call: Call, tokens: Tokens, status: UsageStatus, http_status: int) -> None:
        t = call.target
        call.metered = True  # from here the row is queued: even if our wait is cancelled, it is written
        call.used_tokens = tokens.prompt + tokens.completion
        await self.writer.record(
            usage_row(
                request_id=call.request_id,
                tenant_id=call.caller.tenant_id,
                api_key_id=call.caller.key_id,
                model=call.client_model,
                base_model=t.base_model,
                adapter_id=t.adapter_id,
                endpoint=call.endpoint,
                stream=call.stream,
                prompt_tokens=tokens.prompt,
                completion_tokens=tokens.completion,
                status=status,
                http_status=http_status,
                started_at=call.started_at,
                finished_at=utcnow(),
                source=call.caller.source,
            )
        )
        # Counted only once committed, so the counters agree with the usage table.
        m, extra = self.metrics, self.metrics.tenant(call.caller.tenant_id)
        m.completions.labels(call.endpoint, t.base_model, call.kind, status, str(call.stream).lower(), *extra).inc()
        m.tokens.labels("prompt", t.base_model, call.kind, *extra).inc(tokens.prompt)
        m.tokens.labels("completion", t.base_model, call.kind, *extra).inc(tokens.completion)

    async def _record_failure(self, call: Call, exc: EngineError) -> None:
        """A call the engine refused or failed still leaves a row (with no tokens)."""
        if exc.status_code == 503:  # never reached the engine
            return
        status = UsageStatus.REJECTED if exc.status_code < 500 else UsageStatus.ENGINE_ERROR
        await self._record(call, Tokens(), status, exc.status_code)


def _worst_case_tokens(body: dict[str, Any], body_bytes: int, max_model_len: int) -> int:
    """An upper bound on what this request can cost in tokens: every prompt token is at least one byte."""
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    completion = limit if isinstance(limit, int) and limit > 0 else max_model_len
    n = body.get("n")
    choices = n if isinstance(n, int) and n > 0 else 1
    return body_bytes + completion * choices
