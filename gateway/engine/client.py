"""The only code that speaks HTTP to the vLLM server: one client, one error mapping."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec

from gateway.errors import (
    EngineError,
    EngineFailed,
    EngineRejected,
    EngineTimeout,
    EngineUnavailable,
)
from gateway.settings import EngineSettings

log = logging.getLogger(__name__)


class EngineModelMissing(EngineRejected):
    """The engine does not know the model name (e.g. it restarted and forgot a runtime-loaded adapter)."""

    status_code = 404
    code: str | None = "model_not_found"


@dataclass(frozen=True, slots=True)
class EngineInfo:
    """What the engine serves, learned from the engine itself plus the settings it cannot report."""

    base_model: str
    max_model_len: int
    max_lora_rank: int
    root: str | None = None  # where the engine loaded the base model from (a path on the engine's host)


def _engine_message(body: bytes) -> tuple[str, str | None]:
    """(message, param) of an engine error answer."""
    try:
        data = json.loads(body)
    except ValueError:
        return body[:500].decode(errors="replace") or "engine error", None
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            param = err.get("param")
            message = str(err.get("message") or err.get("detail") or data)[:1000]
            return _readable(message, param if isinstance(param, str) else None)
        return str(data.get("message") or data.get("detail") or err)[:1000], None
    return str(data)[:500], None


# vLLM reports a body that fails its schema as pydantic's error dicts: "1 validation error:\n  {'type': …,
# 'loc': 'body.tools', 'msg': 'Input should be a valid list', 'input': …}", param "body.tools".
_SCHEMA_ERRORS = re.compile(r"\d+ validation errors?:")
_SCHEMA_ERROR = re.compile(r"'loc': '(?:body\.)?([^']*)', 'msg': '([^']*)'")


def _readable(message: str, param: str | None) -> tuple[str, str | None]:
    """The engine's schema errors as the gateway words its own: `tools: Input should be a valid list`, param
    `tools`. Anything else is passed on as it is."""
    if param is not None and param.startswith("body."):
        param = param[len("body.") :]
    if _SCHEMA_ERRORS.match(message) and (found := _SCHEMA_ERROR.findall(message)):
        message = "; ".join(f"{loc}: {msg}" for loc, msg in found)
    return message, param


def map_status(status: int, body: bytes) -> EngineError:
    """Turn an engine error answer into our exception; 5xx details stay in the log, not with the client."""
    message, param = _engine_message(body)
    if status == 404 and "does not exist" in message:
        return EngineModelMissing(message, param=param)
    if 400 <= status < 500:
        return EngineRejected(message, param=param, status_code=400 if status in (404, 405) else status)
    log.warning("engine answered %s: %s", status, message)
    return EngineFailed("The model engine failed to process the request.")


def stream_error(event: bytes) -> EngineError | None:
    """An error the engine sent as an SSE event (vLLM refuses some requests that way, after its 200), as ours."""
    if not event.startswith((b'data: {"error"', b'data:{"error"')):  # every relayed event is asked: no copy first
        return None
    payload = event[5:].lstrip()
    try:
        code = json.loads(payload)["error"].get("code")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return map_status(code if isinstance(code, int) and 400 <= code < 600 else 500, payload)


@asynccontextmanager
async def _translate() -> AsyncIterator[None]:
    """aiohttp's errors, at this one boundary, as ours."""
    try:
        yield
    except TimeoutError as exc:
        raise EngineTimeout("The model engine did not answer in time.") from exc
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
        raise EngineUnavailable() from exc


_JSON = {"Content-Type": "application/json"}
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


class EngineClient:
    """Calls go over one aiohttp session with a keep-alive pool (the benchmark profile showed httpx's pool
    bookkeeping as the largest cost on the request path); health checks over a second one, without keep-alive."""

    def __init__(
        self, settings: EngineSettings, on_adapter_load: Callable[[str], None] | None = None, url: str | None = None
    ) -> None:
        url = url or settings.url
        if not url:
            raise ValueError("ENGINE_URL is not set")
        self.settings = settings
        self.url = url.rstrip("/")
        self._on_load = on_adapter_load or (lambda result: None)
        headers = {}
        if settings.api_key:
            headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
        self.http = aiohttp.ClientSession(
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=settings.request_timeout_s, connect=settings.connect_timeout_s),
            # Idle connections are dropped before the engine's own keep-alive timeout (vLLM/uvicorn: 5 s) closes
            # them: reusing one the server is closing fails the request as if the engine were gone.
            connector=aiohttp.TCPConnector(limit=settings.max_connections, keepalive_timeout=3.0),
            # Every tenant's calls share this session: a cookie the engine (or a balancer before it) sets must not
            # ride along on the next tenant's call, nor pin all traffic to one backend.
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        # Health checks open a connection of their own each time: a kept-alive one can be stale when this process
        # was held back for seconds (its idle clock starts when we got round to releasing it, the engine's when
        # it answered), and a check that fails on it would take a healthy engine out of routing. Concurrent
        # checks share one (calls that broke together ask once), so the pool needs no more than a few.
        self._probe = aiohttp.ClientSession(
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=settings.health_timeout_s, connect=settings.connect_timeout_s),
            connector=aiohttp.TCPConnector(limit=4, force_close=True),
        )
        self._checking: asyncio.Future[str] | None = None

    async def aclose(self) -> None:
        try:
            await self.http.close()
        finally:
            await self._probe.close()

    async def _request(
        self, method: str, path: str, body: Any = None, timeout_s: float | None = None
    ) -> tuple[int, bytes]:
        timeout = aiohttp.ClientTimeout(total=timeout_s) if timeout_s else None
        data = _encode(body) if body is not None else None
        async with (
            _translate(),
            self.http.request(
                method, self.url + path, data=data, headers=_JSON if data else None, timeout=timeout
            ) as r,
        ):
            try:
                return r.status, await r.read()
            except aiohttp.ClientPayloadError as exc:  # the engine had answered (and worked): not to be retried
                raise EngineFailed("The model engine broke off its answer.") from exc

    async def health(self) -> str:
        """ "ok"; "down" (refused, reset, or an error answer: the engine is gone or broken); or "slow" (no answer
        in time: a busy engine on a busy host answers late, which alone does not make it dead). Callers at the same
        time share one check."""
        if self._checking is None:
            self._checking = asyncio.ensure_future(self._check())
            self._checking.add_done_callback(self._checked)
        return await asyncio.shield(self._checking)  # one caller cancelled does not cancel the others' check

    def _checked(self, done: asyncio.Future[str]) -> None:
        if self._checking is done:
            self._checking = None

    async def _check(self) -> str:
        if self._probe.closed:  # shutting down
            return "down"
        try:
            async with _translate(), self._probe.get(self.url + "/health") as r:
                status = r.status
                await r.read()
        except EngineTimeout:
            return "slow"
        except EngineError:
            return "down"
        return "ok" if status == 200 else "down"

    async def discover(self) -> tuple[EngineInfo, frozenset[str]]:
        """Ask the engine which base model it serves, its context length, and the adapters it holds now."""
        status, raw = await self._request("GET", "/v1/models", timeout_s=5.0)
        if status != 200:
            raise map_status(status, raw)
        models = _decode(raw).get("data", [])
        bases = [m for m in models if not m.get("parent")]
        if not bases:
            raise EngineFailed("The engine serves no base model.")
        base = bases[0]
        info = EngineInfo(
            base_model=base["id"],
            max_model_len=int(base.get("max_model_len") or 0),
            max_lora_rank=self.settings.max_lora_rank,
            root=base.get("root"),
        )
        return info, frozenset(m["id"] for m in models if m.get("parent"))

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """A non-streaming call; returns the engine's JSON answer."""
        status, raw = await self._request("POST", path, body)
        if status != 200:
            raise map_status(status, raw)
        try:
            data = _decode(raw)
        except msgspec.DecodeError as exc:
            raise EngineFailed("The model engine sent an unreadable answer.") from exc
        if not isinstance(data, dict):
            raise EngineFailed("The model engine sent an unreadable answer.")
        return data

    @asynccontextmanager
    async def stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[AsyncIterator[list[bytes]]]:
        """A streaming call; yields an iterator over lists of raw SSE events (each `data: …`, no trailing blank
        line), one list per read from the engine.
        Leaving the context closes the connection, which makes the engine abort an unfinished generation."""
        async with _translate():
            response = await self.http.post(self.url + path, data=_encode(body), headers=_JSON)
        try:
            if response.status != 200:
                async with _translate():
                    raw = await response.read()
                raise map_status(response.status, raw)
            events = _sse_events(response)
            first = await anext(events, None)
            if first and (refused := stream_error(first[0])) is not None:
                raise refused  # before anything reached the client: an HTTP error, as without streaming
            yield _after(first, events)
        finally:
            response.close()

    async def load_adapter(self, name: str, path: str) -> None:
        """Register an adapter with the engine; loading one that is already there is fine."""
        try:
            status, raw = await self._request("POST", "/v1/load_lora_adapter", {"lora_name": name, "lora_path": path})
        except EngineError:
            self._on_load("unavailable")
            raise
        if status == 200 or (status == 400 and b"already" in raw):
            self._on_load("loaded" if status == 200 else "already_loaded")
            return
        self._on_load("failed")
        if status >= 500:
            log.warning("engine failed to load adapter %s: %s %s", name, status, raw[:300])
            raise EngineFailed("The model engine failed to load the adapter.")
        raise EngineRejected(f"The engine refused the adapter: {_engine_message(raw)[0]}", status_code=422)

    async def unload_adapter(self, name: str) -> None:
        """Remove an adapter from the engine; one that is not there is already gone."""
        status, raw = await self._request("POST", "/v1/unload_lora_adapter", {"lora_name": name})
        if status in (200, 404):
            return
        raise map_status(status, raw)


async def _after(first: list[bytes] | None, rest: AsyncIterator[list[bytes]]) -> AsyncIterator[list[bytes]]:
    if first:
        yield first
    async for events in rest:
        yield events


async def _sse_events(response: aiohttp.ClientResponse) -> AsyncIterator[list[bytes]]:
    """The SSE events of each read from the engine, as a list (one write to the client per read, not per event)."""
    buffer = b""
    async with _translate():
        async for chunk in response.content.iter_any():
            buffer = buffer + chunk if buffer else chunk
            start = 0
            events = []
            while (cut := buffer.find(b"\n\n", start)) >= 0:
                if cut > start:
                    events.append(buffer[start:cut])
                start = cut + 2
            buffer = buffer[start:]
            if events:
                yield events
    if buffer.strip():
        yield [buffer.strip()]


def parse_event(event: bytes) -> dict[str, Any] | None:
    """The JSON of one `data: {...}` event, or None for `[DONE]` and comments."""
    if not event.startswith(b"data:"):
        return None
    payload = event[5:].strip()
    if payload == b"[DONE]":
        return None
    try:
        value = json.loads(payload)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
