"""The only code that speaks HTTP to the vLLM server: one client, one error mapping."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

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


def _engine_message(response: httpx.Response) -> tuple[str, str | None]:
    """(message, param) of an engine error answer."""
    try:
        body = response.json()
    except ValueError:
        return (response.text[:500] or response.reason_phrase), None
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            param = err.get("param")
            return str(err.get("message") or err.get("detail") or body)[:1000], param if isinstance(
                param, str
            ) else None
        return str(body.get("message") or body.get("detail") or err)[:1000], None
    return str(body)[:500], None


def map_status(response: httpx.Response) -> EngineError:
    """Turn an engine error answer into our exception; 5xx details stay in the log, not with the client."""
    message, param = _engine_message(response)
    status = response.status_code
    if status == 404 and "does not exist" in message:
        return EngineModelMissing(message, param=param)
    if 400 <= status < 500:
        return EngineRejected(message, param=param, status_code=400 if status in (404, 405) else status)
    log.warning("engine answered %s: %s", status, message)
    return EngineFailed("The model engine failed to process the request.")


@asynccontextmanager
async def _translate() -> AsyncIterator[None]:
    try:
        yield
    except httpx.TimeoutException as exc:
        raise EngineTimeout("The model engine did not answer in time.") from exc
    except httpx.TransportError as exc:
        raise EngineUnavailable() from exc


class EngineClient:
    def __init__(
        self,
        settings: EngineSettings,
        http: httpx.AsyncClient | None = None,
        on_adapter_load: Callable[[str], None] | None = None,
    ) -> None:
        if not settings.url:
            raise ValueError("ENGINE_URL is not set")
        self.settings = settings
        self._on_load = on_adapter_load or (lambda result: None)
        headers = {}
        if settings.api_key:
            headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
        self._info: EngineInfo | None = None
        self.http = http or httpx.AsyncClient(
            base_url=settings.url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(settings.request_timeout_s, connect=settings.connect_timeout_s),
            limits=httpx.Limits(max_connections=settings.max_connections, max_keepalive_connections=64),
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def healthy(self) -> bool:
        try:
            r = await self.http.get("/health", timeout=2.0)
        except httpx.HTTPError:
            return False
        return r.status_code == 200

    async def info(self) -> EngineInfo:
        """The engine's base model and limits, discovered on first use and then cached."""
        if self._info is None:
            self._info = await self.discover()
        return self._info

    async def discover(self) -> EngineInfo:
        """Ask the engine which base model it serves and its context length."""
        async with _translate():
            r = await self.http.get("/v1/models", timeout=5.0)
        if r.status_code != 200:
            raise map_status(r)
        models = r.json().get("data", [])
        bases = [m for m in models if not m.get("parent")]
        if not bases:
            raise EngineFailed("The engine serves no base model.")
        base = bases[0]
        return EngineInfo(
            base_model=base["id"],
            max_model_len=int(base.get("max_model_len") or 0),
            max_lora_rank=self.settings.max_lora_rank,
            root=base.get("root"),
        )

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """A non-streaming call; returns the engine's JSON answer."""
        async with _translate():
            r = await self.http.post(path, json=body)
        if r.status_code != 200:
            raise map_status(r)
        try:
            data: dict[str, Any] = r.json()
        except ValueError as exc:
            raise EngineFailed("The model engine sent an unreadable answer.") from exc
        return data

    @asynccontextmanager
    async def stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[AsyncIterator[bytes]]:
        """A streaming call; yields an iterator over raw SSE events (each `data: …`, no trailing blank line)."""
        request = self.http.build_request("POST", path, json=body)
        async with _translate():
            response = await self.http.send(request, stream=True)
        try:
            if response.status_code != 200:
                async with _translate():
                    await response.aread()
                raise map_status(response)
            yield _sse_events(response)
        finally:
            await response.aclose()

    async def load_adapter(self, name: str, path: str) -> None:
        """Register an adapter with the engine; loading one that is already there is fine."""
        try:
            async with _translate():
                r = await self.http.post("/v1/load_lora_adapter", json={"lora_name": name, "lora_path": path})
        except EngineError:
            self._on_load("unavailable")
            raise
        text = r.text
        if r.status_code == 200 or (r.status_code == 400 and "already" in text):
            self._on_load("loaded" if r.status_code == 200 else "already_loaded")
            return
        self._on_load("failed")
        if r.status_code >= 500:
            log.warning("engine failed to load adapter %s: %s %s", name, r.status_code, text[:300])
            raise EngineFailed("The model engine failed to load the adapter.")
        raise EngineRejected(f"The engine refused the adapter: {_engine_message(r)[0]}", status_code=422)

    async def unload_adapter(self, name: str) -> None:
        """Remove an adapter from the engine; one that is not there is already gone."""
        async with _translate():
            r = await self.http.post("/v1/unload_lora_adapter", json={"lora_name": name})
        if r.status_code in (200, 404):
            return
        raise map_status(r)


async def _sse_events(response: httpx.Response) -> AsyncIterator[bytes]:
    buffer = b""
    async with _translate():
        async for chunk in response.aiter_raw():
            buffer += chunk
            while True:
                cut = buffer.find(b"\n\n")
                if cut < 0:
                    break
                event, buffer = buffer[:cut], buffer[cut + 2 :]
                if event:
                    yield event
    if buffer.strip():
        yield buffer.strip()


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
