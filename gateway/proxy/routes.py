"""The OpenAI-compatible tenant API: chat/completions, completions, models."""

from __future__ import annotations

import time
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.response import Stream
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.adapters import service as adapters
from gateway.adapters.service import model_not_found
from gateway.auth.service import Caller
from gateway.engine.client import EngineClient
from gateway.proxy.schemas import parse_body
from gateway.proxy.service import Call, ProxyService

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def _forward(
    proxy: ProxyService, caller: Caller, call_body: dict[str, Any], model: str, path: str
) -> Response[Any]:
    call: Call = await proxy.prepare(caller, path, call_body, model)
    headers = {"x-request-id": call.request_id}
    if call.stream:
        events = await proxy.open_stream(call)
        return Stream(events, media_type="text/event-stream", headers={**_SSE_HEADERS, **headers})
    return Response(await proxy.complete(call), headers=headers)


class OpenAIController(Controller):
    path = "/v1"
    tags = ["OpenAI"]

    @post("/chat/completions", status_code=200)
    async def chat_completions(
        self, request: Request[Any, Any, Any], caller: Caller, proxy: ProxyService
    ) -> Response[Any]:
        """Chat completion on the base model or one of your adapters (`model` = name or deployment id)."""
        body, model = parse_body(await request.body(), "chat")
        return await _forward(proxy, caller, body, model, "/v1/chat/completions")

    @post("/completions", status_code=200)
    async def completions(self, request: Request[Any, Any, Any], caller: Caller, proxy: ProxyService) -> Response[Any]:
        """Text completion on the base model or one of your adapters."""
        body, model = parse_body(await request.body(), "completions")
        return await _forward(proxy, caller, body, model, "/v1/completions")

    @get("/models")
    async def models(self, caller: Caller, db_session: AsyncSession, engine: EngineClient) -> dict[str, Any]:
        """The models this key may call: the base model and the tenant's own ready adapters."""
        info = await engine.info()
        now = int(time.time())
        data: list[dict[str, Any]] = [
            {"id": info.base_model, "object": "model", "created": now, "owned_by": "system", "parent": None}
        ]
        for a in await adapters.list_ready(db_session, caller.tenant_id):
            data.append(
                {
                    "id": a.name,
                    "object": "model",
                    "created": int(a.created_at.timestamp()),
                    "owned_by": caller.tenant_id,
                    "parent": a.base_model,
                    "deployment_id": a.id,
                }
            )
        return {"object": "list", "data": data}


class MaasController(Controller):
    """Per-deployment endpoints, as hosted platforms offer them; `model` may be omitted."""

    path = "/maas/deployment/{deployment_id:str}"
    tags = ["Deployments"]

    @post("/chat/completions", status_code=200)
    async def chat_completions(
        self, deployment_id: str, request: Request[Any, Any, Any], caller: Caller, proxy: ProxyService
    ) -> Response[Any]:
        """Chat completion on one deployment."""
        body, _ = parse_body(await request.body(), "chat", default_model=deployment_id)
        return await _forward(proxy, caller, body, _deployment(deployment_id), "/v1/chat/completions")

    @post("/completions", status_code=200)
    async def completions(
        self, deployment_id: str, request: Request[Any, Any, Any], caller: Caller, proxy: ProxyService
    ) -> Response[Any]:
        """Text completion on one deployment."""
        body, _ = parse_body(await request.body(), "completions", default_model=deployment_id)
        return await _forward(proxy, caller, body, _deployment(deployment_id), "/v1/completions")


def _deployment(deployment_id: str) -> str:
    """The path names a deployment; it wins over any `model` in the body."""
    if not deployment_id.startswith("mif-"):
        raise model_not_found(deployment_id)
    return deployment_id
