"""The `caller` dependency: the request's API key, authenticated."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.datastructures import State
from litestar.di import Provide

from gateway.auth.models import Scope
from gateway.auth.service import Caller, authenticate


async def _caller(request: Request[Any, Any, Any], state: State) -> Caller:
    return await authenticate(state.db_engine, request.headers.get("authorization"), defaults=state.settings.tenants)


async def _cached_caller(request: Request[Any, Any, Any], state: State) -> Caller:
    # Only for the metered calls: their open-row insert checks the key again in the admission transaction.
    return await authenticate(
        state.db_engine, request.headers.get("authorization"), state.key_cache, defaults=state.settings.tenants
    )


async def _paying_caller(request: Request[Any, Any, Any], state: State) -> Caller:
    caller = await authenticate(
        state.db_engine, request.headers.get("authorization"), defaults=state.settings.tenants, overdue_ok=True
    )
    caller.require(Scope.BILLING)  # a leaked inference-only key can neither read the bill nor charge the card
    return caller


provide_caller = Provide(_caller)
# For the billing routes (the `billing` scope): a tenant suspended for an overdue invoice can still see and pay it.
provide_paying_caller = Provide(_paying_caller)
provide_cached_caller = Provide(_cached_caller)
METERED = {"caller": provide_cached_caller}
