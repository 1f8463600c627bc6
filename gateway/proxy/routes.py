"""The OpenAI-compatible tenant API: chat/completions, completions, models."""

from __future__ import annotations

import time
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.background_tasks import BackgroundTask
from litestar.datastructures import State
from litestar.response import Stream
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.adapters import service as adapters
from gateway.adapters.service import model_not_found
from gateway.auth.dependencies import METERED
from gateway.auth.models import Scope
from gateway.auth.service import Caller
from gateway.engine.pool import EnginePool
from gateway.proxy.openapi import documented_body
from gateway.proxy.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    DeploymentChatRequest,
    DeploymentCompletionRequest,
    parse_body,
)
from gateway.proxy.service import Call, ProxyService

# The metered handlers take one dependency (`caller`) and read the proxy from the app state: with two,
# Litestar resolves them in an anyio task group (two tasks per request; 11% of the CPU in the profile).
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_CHAT_BODY = documented_body(ChatCompletionRequest)
_COMPLETION_BODY = documented_body(CompletionRequest)
_DEPLOYMENT_CHAT_BODY = documented_body(DeploymentChatRequest)
_DEPLOYMENT_COMPLETION_BODY = documented_body(DeploymentCompletionRequest)


async def forward(
    proxy: ProxyService, caller: Caller, raw: bytes, kind: str, path: str, deployment: str | None = None
) -> Response[Any]:
    """One metered call through the proxy (admitted, limited, metered, billed); the console's playground too."""
    caller.require(Scope.INFERENCE)
    limit = await proxy.engines.max_model_len()  # known after the first call
    body, model = parse_body(raw, kind, default_model=deployment, max_model_len=limit)
    if deployment is not None:  # the path names the deployment; it wins over any `model` in the body
        model = _deployment(deployment)
    call: Call = await proxy.prepare(caller, path, body, model, len(raw))
    headers = {"x-request-id": call.request_id, **call.grant.headers}
    if call.stream:
        relay = await proxy.open_stream(call)
        return Stream(
            relay.events,
            media_type="text/event-stream",
            headers={**_SSE_HEADERS, **headers},
            background=BackgroundTask(proxy.finish, relay),
        )
    return Response(await proxy.complete(call), headers=headers)


class OpenAIController(Controller):
    path = "/v1"
    tags = ["OpenAI"]

    @post("/chat/completions", status_code=200, operation_class=_CHAT_BODY, dependencies=METERED)
    async def chat_completions(self, request: Request[Any, Any, Any], caller: Caller, state: State) -> Response[Any]:
        """Chat completion on the base model or one of your adapters (`model` = name or deployment id)."""
        return await forward(state.proxy, caller, await request.body(), "chat", "/v1/chat/completions")

    @post("/completions", status_code=200, operation_class=_COMPLETION_BODY, dependencies=METERED)
    async def completions(self, request: Request[Any, Any, Any], caller: Caller, state: State) -> Response[Any]:
        """Text completion on the base model or one of your adapters."""
        return await forward(state.proxy, caller, await request.body(), "completions", "/v1/completions")

    @get("/models")
    async def models(self, caller: Caller, db_session: AsyncSession, engines: EnginePool) -> dict[str, Any]:
        """The models this key may call: the base models and the tenant's own ready adapters."""
        return {"object": "list", "data": await _models(caller, db_session, engines)}

    @get("/models/{model:path}")
    async def model(self, model: str, caller: Caller, db_session: AsyncSession, engines: EnginePool) -> dict[str, Any]:
        """One model this key may call, by name or deployment id (base model names may contain `/`)."""
        wanted = model.lstrip("/")
        for m in await _models(caller, db_session, engines):
            if wanted in (m["id"], m.get("deployment_id")):
                return m
        raise model_not_found(wanted[:64])


class MaasController(Controller):
    """Per-deployment endpoints, as hosted platforms offer them; `model` may be omitted."""

    path = "/maas/deployment/{deployment_id:str}"
    tags = ["Deployments"]

    @post("/chat/completions", status_code=200, operation_class=_DEPLOYMENT_CHAT_BODY, dependencies=METERED)
    async def chat_completions(
        self, deployment_id: str, request: Request[Any, Any, Any], caller: Caller, state: State
    ) -> Response[Any]:
        """Chat completion on one deployment."""
        return await forward(state.proxy, caller, await request.body(), "chat", "/v1/chat/completions", deployment_id)

    @post("/completions", status_code=200, operation_class=_DEPLOYMENT_COMPLETION_BODY, dependencies=METERED)
    async def completions(
        self, deployment_id: str, request: Request[Any, Any, Any], caller: Caller, state: State
    ) -> Response[Any]:
        """Text completion on one deployment."""
        return await forward(state.proxy, caller, await request.body(), "completions", "/v1/completions", deployment_id)


async def _models(caller: Caller, db_session: AsyncSession, engines: EnginePool) -> list[dict[str, Any]]:
    now = int(time.time())
    data: list[dict[str, Any]] = [
        {"id": base, "object": "model", "created": now, "owned_by": "system", "parent": None}
        for base in sorted(await engines.bases())
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
    return data


def _deployment(deployment_id: str) -> str:
    if not deployment_id.startswith("mif-") or len(deployment_id) > 64 or "\x00" in deployment_id:
        raise model_not_found(deployment_id[:64].replace("\x00", ""))
    return deployment_id
