"""/v1/keys: a tenant's own keys, with a key that has the `keys` scope. Thin: parse, call the service, shape."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from litestar import Controller, Request, delete, get, post
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.audit.service import Actor
from gateway.auth.models import Scope
from gateway.auth.service import Caller
from gateway.keys import service


class KeyRequest(msgspec.Struct, forbid_unknown_fields=True):
    name: str = ""
    expires_at: datetime | None = None
    scopes: list[str] | None = None  # default: inference, deployments, billing (never beyond the caller's)


class NewKey(msgspec.Struct):
    id: str
    key: str  # shown exactly once
    prefix: str
    name: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None


class KeysController(Controller):
    path = "/v1/keys"
    tags = ["Keys"]

    @get("/")
    async def list_keys(self, caller: Caller, db_engine: AsyncEngine) -> dict[str, Any]:
        """The tenant's keys (never their secrets), with when each was last used. Needs the `keys` scope."""
        caller.require(Scope.KEYS)
        return {"object": "list", "data": await service.list_keys(db_engine, caller.tenant_id)}

    @post("/", status_code=201)
    async def create_key(
        self, request: Request[Any, Any, Any], caller: Caller, data: KeyRequest, db_session: AsyncSession
    ) -> NewKey:
        """A new key of the tenant; `key` is shown in this answer only. Needs the `keys` scope."""
        caller.require(Scope.KEYS)
        key, plaintext = await service.create(
            db_session, Actor.of(request, caller.key_id), caller.tenant_id, name=data.name,
            expires_at=data.expires_at, scopes=data.scopes, allowed=caller.scopes,
        )  # fmt: skip
        return NewKey(key.id, plaintext, key.prefix, key.name, list(key.scopes), key.created_at, key.expires_at)

    @delete("/{key_id:str}", status_code=204)
    async def revoke_key(
        self, request: Request[Any, Any, Any], caller: Caller, key_id: str, db_session: AsyncSession
    ) -> None:
        """Revoke one of the tenant's keys; it stops working on its next request. Needs the `keys` scope."""
        caller.require(Scope.KEYS)
        await service.revoke(db_session, Actor.of(request, caller.key_id), caller.tenant_id, key_id)
