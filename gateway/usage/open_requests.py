"""Open requests: each admitted request has a row in PostgreSQL until its usage is committed.

The row is committed before the engine sees the request and deleted in the transaction that writes the usage
row, so a gateway process that dies (kill -9, OOM, host loss) leaves rows behind that a surviving process
settles (gateway/usage/instances.py). The same rows carry what is shared by every gateway process and host:
concurrent requests per tenant and per key, and the prepaid holds on trial tokens and credit. Admissions that
need those counts take a transaction-scoped lock per tenant, so the counts are exact, not per process.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from billing.admission import Admission, Ticket
from gateway.errors import RateLimited
from gateway.limits.service import Limits
from gateway.timeutil import utcnow

_LOCK = sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:t, 7231))")
_HELD = sa.text(
    """
    SELECT count(*) AS tenant_open,
           count(*) FILTER (WHERE api_key_id = :k) AS key_open,
           coalesce(sum(reserved_trial_tokens), 0) AS tokens,
           coalesce(sum(reserved_micros), 0) AS micros
    FROM open_requests WHERE tenant_id = :t
    """
)
_OPEN = sa.text(
    """
    INSERT INTO open_requests (request_id, instance_id, tenant_id, api_key_id, model, base_model, adapter_id,
        endpoint, stream, reserved_trial_tokens, reserved_micros, prompt_tokens, completion_tokens, started_at)
    VALUES (:request_id, :instance_id, :tenant_id, :api_key_id, :model, :base_model, :adapter_id,
        :endpoint, :stream, :tokens, :micros, 0, 0, :started_at)
    """
)


@dataclass(frozen=True, slots=True)
class Opening:
    """The request as its open row records it."""

    request_id: str
    tenant_id: str
    api_key_id: str
    model: str
    base_model: str
    adapter_id: str | None
    endpoint: str
    stream: bool


class OpenRequests:
    def __init__(self, db: AsyncEngine, admission: Admission, instance_id: str) -> None:
        self._db = db
        self._admission = admission
        self.instance_id = instance_id
        self.live: set[str] = set()  # this process's open request ids (the rest of its rows are strays)
        self._serialized: set[str] = set()  # tenants last seen prepaid: their admissions take the database lock
        self._tenant_locks: dict[str, asyncio.Lock] = {}

    async def open(self, req: Opening, limits: tuple[Limits, ...], worst_case: int) -> datetime:
        """Admit against concurrency limits and prepaid quota and commit the open row; raise RateLimited or
        InsufficientQuota (nothing written then). Returns when it was admitted: the request's start."""
        concurrent = [lim for lim in limits if lim.concurrent is not None]
        if concurrent or req.tenant_id in self._serialized:
            # One waiter per tenant in this process holds a pooled connection, not one per request: a burst
            # from one tenant cannot take every connection while it queues for the tenant's database lock.
            lock = self._tenant_locks.setdefault(req.tenant_id, asyncio.Lock())
            async with lock:
                return await self._open(req, concurrent, worst_case)
        return await self._open(req, concurrent, worst_case)

    async def _open(self, req: Opening, concurrent: list[Limits], worst_case: int) -> datetime:
        async with self._db.begin() as conn:
            state = await self._admission.state(conn, req.tenant_id)
            if state.prepaid:
                self._serialized.add(req.tenant_id)
            else:
                self._serialized.discard(req.tenant_id)
            if state.prepaid or concurrent:
                await conn.execute(_LOCK, {"t": req.tenant_id})
                held = (await conn.execute(_HELD, {"t": req.tenant_id, "k": req.api_key_id})).one()
                _check_concurrency(concurrent, req.tenant_id, held.tenant_open, held.key_open)
                state = await self._admission.state(conn, req.tenant_id)  # after `held`: see Admission.decide
                ticket = await self._admission.decide(
                    conn, state, req.adapter_id, req.base_model, worst_case, int(held.tokens), int(held.micros)
                )
            else:
                ticket = Ticket()
            # After the counts were read: a request admitted in a freed slot starts after the one that left.
            started_at = utcnow()
            await _insert(conn, req, self.instance_id, ticket, started_at)
        self.live.add(req.request_id)
        return started_at

    def closed(self, request_id: str) -> None:
        """The row is gone (usage written or discarded); called by the writer after its commit."""
        self.live.discard(request_id)


def _check_concurrency(limits: list[Limits], tenant_id: str, tenant_open: int, key_open: int) -> None:
    for lim in limits:
        assert lim.concurrent is not None
        open_now = tenant_open if lim.subject == f"t:{tenant_id}" else key_open
        if open_now >= lim.concurrent:
            raise RateLimited(
                f"Too many concurrent requests (limit {lim.concurrent}); retry when one has finished.",
                headers={"Retry-After": "1"},
            )


async def _insert(conn: AsyncConnection, req: Opening, instance_id: str, ticket: Ticket, started_at: datetime) -> None:
    await conn.execute(
        _OPEN,
        {
            "request_id": req.request_id,
            "instance_id": instance_id,
            "tenant_id": req.tenant_id,
            "api_key_id": req.api_key_id,
            "model": req.model,
            "base_model": req.base_model,
            "adapter_id": req.adapter_id,
            "endpoint": req.endpoint,
            "stream": req.stream,
            "tokens": ticket.tokens,
            "micros": ticket.micros,
            "started_at": started_at,
        },
    )
