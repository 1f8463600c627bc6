"""The console's deployments and playground: upload an adapter (the API's upload path, deploy_upload), see and
delete deployments, and chat with a base model or a deployment through the proxy — the same path as API calls.

The playground authenticates by the console session and calls the proxy with the tenant's playground key
(gateway/auth/service.py: playground_caller), never with a key the browser holds: a tenant's real keys are
shown once and not kept, and a key in the page could leak; this one has no plaintext at all, is inference-only,
and its calls are admitted, limited, metered and billed like any, and marked `playground` in the usage rows.
"""

from __future__ import annotations

import json
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.response import Redirect, Template
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.adapters import service as adapters
from gateway.adapters.routes import receive_upload
from gateway.adapters.schemas import DeploymentPublic
from gateway.adapters.storage import AdapterStore
from gateway.audit.service import Actor, client_ip
from gateway.auth import service as auth
from gateway.console import service, session
from gateway.console.pages import page
from gateway.engine.pool import EnginePool
from gateway.errors import GatewayError, InvalidRequest
from gateway.http_errors import gateway_error_body
from gateway.people import sessions
from gateway.proxy.routes import forward
from gateway.settings import Settings


def _error(exc: GatewayError) -> Response[Any]:
    """Errors of the page's scripts are JSON (the same shape as the API's), shown by the script in words."""
    return Response(gateway_error_body(exc), status_code=exc.status_code, headers=exc.headers)


def _base_url(request: Request[Any, Any, Any]) -> str:
    return str(request.base_url).rstrip("/")


class DeploymentsController(Controller):
    guards = [session.require_session]

    @get("/deployments", include_in_schema=False)
    async def deployments(
        self, request: Request[Any, Any, Any], db_session: AsyncSession, engines: EnginePool
    ) -> Template:
        who = session.who(request)
        rows = [DeploymentPublic.of(a) for a in await adapters.list_owned(db_session, who.tenant_id)]  # type: ignore[arg-type]
        return page(request, "deployments.html", deployments=rows, bases=sorted(await engines.bases()),
                    base_url=_base_url(request))  # fmt: skip

    @post("/deployments", include_in_schema=False, status_code=201, request_max_body_size=None)
    async def upload(
        self, request: Request[Any, Any, Any], db_session: AsyncSession, db_engine: AsyncEngine,
        engines: EnginePool, adapter_store: AdapterStore,
    ) -> Response[Any]:  # fmt: skip
        """The form's upload (sent by its script, with the CSRF token in a header and a progress bar)."""
        who = session.who(request)
        actor = Actor(who.actor, client_ip(request))
        try:
            adapter = await receive_upload(request, who.tenant_id, actor, db_session, db_engine, engines,  # type: ignore[arg-type]
                                           adapter_store)  # fmt: skip
        except GatewayError as exc:
            return _error(exc)
        return Response(DeploymentPublic.of(adapter), status_code=201)

    @post("/deployments/{deployment_id:str}/delete", include_in_schema=False, status_code=303)
    async def delete(
        self, request: Request[Any, Any, Any], deployment_id: str, db_session: AsyncSession, engines: EnginePool,
        adapter_store: AdapterStore,
    ) -> Redirect:  # fmt: skip
        who = session.who(request)
        adapter = await adapters.get_owned(db_session, who.tenant_id, deployment_id)  # type: ignore[arg-type]
        await adapters.delete(db_session, engines, adapter_store, adapter, Actor(who.actor, client_ip(request)))
        await sessions.set_flash(db_session, who.session_id, f"Deployment {adapter.name} ({adapter.id}) deleted.")
        await db_session.commit()
        return Redirect("/console/deployments", status_code=303)

    @get("/playground", include_in_schema=False)
    async def playground(
        self, request: Request[Any, Any, Any], db_session: AsyncSession, engines: EnginePool, settings: Settings
    ) -> Template:
        who = session.who(request)
        ready = await adapters.list_ready(db_session, who.tenant_id)  # type: ignore[arg-type]
        return page(request, "playground.html", bases=sorted(await engines.bases()), deployments=ready,
                    currency=settings.billing.currency)  # fmt: skip

    @post("/playground/chat", include_in_schema=False, status_code=200)
    async def chat(
        self, request: Request[Any, Any, Any], db_session: AsyncSession, db_engine: AsyncEngine, state: State,
        settings: Settings,
    ) -> Response[Any]:  # fmt: skip
        """One streamed chat completion through the proxy, as the tenant's playground key."""
        who = session.who(request)
        try:
            raw = await request.body()
            try:
                asked = json.loads(raw)
            except ValueError:
                raise InvalidRequest("Send the playground's JSON.") from None
            if not isinstance(asked, dict):
                raise InvalidRequest("Send the playground's JSON.")
            body = {
                "model": asked.get("model"), "messages": asked.get("messages"), "stream": True,
                "stream_options": {"include_usage": True},
                **{k: asked[k] for k in ("temperature", "max_tokens") if asked.get(k) is not None},
            }  # fmt: skip
            caller = await auth.playground_caller(db_session, db_engine, who.tenant_id, settings.tenants)  # type: ignore[arg-type]
            return await forward(state.proxy, caller, json.dumps(body).encode(), "chat", "/v1/chat/completions")
        except GatewayError as exc:
            return _error(exc)

    @get("/playground/cost/{request_id:str}", include_in_schema=False)
    async def cost(self, request: Request[Any, Any, Any], request_id: str, db_engine: AsyncEngine) -> dict[str, Any]:
        """What one playground reply was charged (once its charge is committed, shortly after the reply)."""
        return await service.charge(db_engine, session.who(request).tenant_id, request_id)  # type: ignore[arg-type]
