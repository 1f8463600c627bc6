"""Open requests: each admitted request has a row in PostgreSQL until its usage is committed.

The row is committed before the engine sees the request and deleted in the transaction that writes the usage
row, so a gateway process that dies (kill -9, OOM, host loss) leaves rows behind that a surviving process
settles (gateway/usage/instances.py). The same rows carry what is shared by every gateway process and host:
concurrent requests per tenant and per key, and the prepaid holds on trial tokens and credit. Admissions that
need those counts take a transaction-scoped lock per tenant, so the counts are exact, not per process.

Admissions are group-committed: the requests that arrive while one admission transaction runs are admitted
together in the next one (one lock per tenant, one read of the holds, one lock of the rate windows, one
multi-row insert, one update of the windows, one commit), and each caller waits for that commit. The same
transaction counts each admitted request in its per-minute rate windows (gateway/limits/service.py): a
request is counted there if and only if its open row is committed.
The insert also checks that the key is still live and its tenant not suspended, so a key revoked before the
admission commits is refused whatever a cache says.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from billing.admission import AccountState, Admission, Ticket
from billing.errors import BillingError
from billing.rating import PriceVersion
from gateway.adapters.service import model_not_found
from gateway.db import guarded
from gateway.errors import AuthenticationFailed, GatewayError, PermissionDenied, RateLimited
from gateway.limits import service as limits
from gateway.limits.service import Grant, Limits
from gateway.timeutil import utcnow
from gateway.usage.stopwatch import Observer, Stopwatch, ignore

log = logging.getLogger(__name__)

# Tenants in sorted order, so that two batches (any processes) never wait for each other's locks in a cycle.
_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(t, 7231)) FROM unnest($1::text[]) AS t"
_HELD = """
    SELECT tenant_id, api_key_id, count(*) AS open,
           coalesce(sum(reserved_trial_tokens), 0) AS tokens, coalesce(sum(reserved_micros), 0) AS micros
    FROM open_requests WHERE tenant_id = ANY($1::text[]) GROUP BY tenant_id, api_key_id
"""
# One statement: whether each request's key, tenant and adapter are still live, and the open rows of those
# that are (a cache may have served a key revoked or an adapter deleted a moment ago).
_OPEN = """
    WITH r AS (
        SELECT * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
            $9::boolean[], $10::bigint[], $11::bigint[], $12::timestamptz[])
          AS r(request_id, tenant_id, api_key_id, model, base_model, adapter_id, endpoint, stream, tokens, micros,
               started_at)
    ), checked AS (
        SELECT r.*, (k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now())) AS key_live,
               t.suspended_at IS NULL AS tenant_live,
               (r.adapter_id IS NULL OR (a.deleted_at IS NULL AND a.status = 'ready')) AS adapter_live
        FROM r JOIN api_keys k ON k.id = r.api_key_id JOIN tenants t ON t.id = r.tenant_id
        LEFT JOIN adapters a ON a.id = r.adapter_id
    ), inserted AS (
        INSERT INTO open_requests (request_id, instance_id, tenant_id, api_key_id, model, base_model, adapter_id,
            endpoint, stream, reserved_trial_tokens, reserved_micros, prompt_tokens, completion_tokens, started_at)
        SELECT request_id, $1, tenant_id, api_key_id, model, base_model, adapter_id, endpoint, stream,
            tokens, micros, 0, 0, started_at
        FROM checked WHERE key_live AND tenant_live AND adapter_live
    )
    SELECT request_id, key_live, tenant_live, adapter_live FROM checked
"""

_KEY_GONE = "Incorrect API key provided. You can find your API key in your account settings."
_SUSPENDED = "This account is suspended: its API keys cannot be used. Contact the operator."


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


@dataclass(slots=True)
class _Pending:
    req: Opening
    concurrent: list[Limits]
    windowed: list[Limits]  # with a per-minute limit
    worst_case: int
    future: asyncio.Future[tuple[datetime, Grant]]
    ticket: Ticket | None = None
    grant: Grant | None = None
    started_at: datetime | None = None  # set when admitted: after the counts were read
    abandoned: bool = False


class _Relock(Exception):
    """A tenant turned out to need its lock after others were taken: the transaction starts again."""


@dataclass(slots=True)
class _Held:
    """What a tenant's open requests hold, updated as a batch admits more of them."""

    tenant_open: int = 0
    tokens: int = 0
    micros: int = 0
    key_open: dict[str, int] | None = None


class OpenRequests:
    def __init__(self, pool: asyncpg.Pool, admission: Admission, instance_id: str, max_batch: int = 512) -> None:
        self._pool = pool
        self._admission = admission
        self.instance_id = instance_id
        self.max_batch = max_batch
        self.live: set[str] = set()  # this process's open request ids (the rest of its rows are strays)
        self._pending: list[_Pending] = []
        self._draining: asyncio.Task[None] | None = None
        self._postpaid: set[str] = set()  # tenants last seen postpaid: not locked unless they have a limit
        # An admission committed for a caller that stopped waiting (client gone): close its row, settle its grant.
        self.on_abandoned: Callable[[str, Grant], None] = lambda request_id, grant: None
        self.timed: Observer = ignore  # each admission commit's duration and requests decided

    async def open(self, req: Opening, subjects: tuple[Limits, ...], worst_case: int) -> tuple[datetime, Grant]:
        """Admit against rate and concurrency limits and prepaid quota, count the rate windows and commit the
        open row; raise RateLimited, InsufficientQuota, or AuthenticationFailed / PermissionDenied for a key
        that is no longer live (nothing written then). Returns when it was admitted (the request's start) and
        what it holds in its rate windows."""
        limits.check_request(subjects, worst_case)
        concurrent = [lim for lim in subjects if lim.concurrent is not None]
        future: asyncio.Future[tuple[datetime, Grant]] = asyncio.get_running_loop().create_future()
        pending = _Pending(req, concurrent, limits.windowed(subjects), worst_case, future)
        self._pending.append(pending)
        if self._draining is None:
            self._draining = asyncio.create_task(self._drain(), name="open-requests")
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            if future.done() and not future.cancelled() and future.exception() is None:
                self.on_abandoned(req.request_id, future.result()[1])  # committed just before we were cancelled
            else:
                pending.abandoned = True  # the batch closes the row if it commits one
            raise

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = [p for p in self._pending[: self.max_batch] if not p.abandoned]
                del self._pending[: self.max_batch]
                if batch:
                    await self._admit_batch(batch)
        finally:
            self._draining = None

    async def _admit_batch(self, batch: list[_Pending]) -> None:
        watch = Stopwatch()
        try:
            async with guarded():
                await self._transaction(batch)
            watch.finished(self.timed, len(batch), log, "admission of %d requests", len(batch))
        except Exception as exc:  # handed to every caller still waiting, none swallowed
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        for p in batch:
            if p.ticket is not None and p.started_at is not None and p.grant is not None:
                self.live.add(p.req.request_id)
                p.future.set_result((p.started_at, p.grant))
                if p.abandoned:  # the caller stopped waiting (client gone) before the commit
                    self.on_abandoned(p.req.request_id, p.grant)

    async def _transaction(self, batch: list[_Pending]) -> None:
        """Decide every request of the batch and insert the admitted ones, in one transaction. A refused
        request's future gets its error; an admitted one's `ticket` and `grant` are set (its future once
        committed)."""
        tenants = sorted({p.req.tenant_id for p in batch})
        limited = {p.req.tenant_id for p in batch if p.concurrent}
        while True:
            try:
                await self._try_transaction(batch, tenants, limited)
                return
            except _Relock:
                continue

    async def _try_transaction(self, batch: list[_Pending], tenants: list[str], limited: set[str]) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            # Every tenant that may need its lock is locked first, in sorted order (batches of several
            # processes never wait for each other in a cycle); only tenants last seen postpaid and without
            # a concurrency limit are not.
            held = await _lock_and_count(conn, [t for t in tenants if t in limited or t not in self._postpaid])
            # After `held` (see Admission.decide_priced); the prices too, in this transaction: a price set a
            # moment ago by another process applies at once.
            models = {m for p in batch for m in (p.req.adapter_id, p.req.base_model) if m}
            states, book = await self._admission.read(conn, tenants, models)
            late = {t for t in tenants if t not in held and states[t].prepaid}
            if late:  # turned prepaid since we last saw them: again (rolled back), locking them too, in order
                self._postpaid -= late
                raise _Relock
            self._postpaid |= {t for t in tenants if not states[t].prepaid}
            self._postpaid -= {t for t in tenants if states[t].prepaid}
            counted = {t: held[t] for t in tenants if t in limited or states[t].prepaid}
            # The rate windows' rows are locked after the tenants' locks (in every process: no cycle). A request
            # counted here and then refused by _insert (key revoked a moment ago) is not written to the windows,
            # but later requests of this batch saw it counted, as they see it in `held`: conservative, rare.
            windows = await limits.lock_windows(conn, {s.subject for p in batch for s in p.windowed})
            admitted = [
                p
                for p in batch
                if self._decide(p, states[p.req.tenant_id], counted.get(p.req.tenant_id), book, windows)
            ]
            # After the counts were read: a request admitted in a freed slot starts after the one that left.
            started_at = utcnow()
            for p in admitted:
                p.started_at = started_at
            if admitted:
                await self._insert(conn, admitted)
                await limits.add_counts(conn, [p.grant for p in admitted if p.ticket is not None and p.grant])

    def _decide(
        self,
        p: _Pending,
        state: AccountState,
        held: _Held | None,
        book: dict[str, list[PriceVersion]],
        windows: dict[str, limits.Window],
    ) -> bool:
        req = p.req
        try:
            if refused := limits.refusal(p.windowed, p.worst_case, windows):
                raise refused
            if held is None:  # postpaid without concurrency limits: nothing to count
                p.ticket = self._admission.decide_priced(
                    book, state, req.adapter_id, req.base_model, p.worst_case, 0, 0
                )
                p.grant = limits.count(p.windowed, p.worst_case, windows)
                return True
            assert held.key_open is not None
            key_open = held.key_open.get(req.api_key_id, 0)
            _check_concurrency(p.concurrent, req.tenant_id, held.tenant_open, key_open)
            ticket = self._admission.decide_priced(
                book, state, req.adapter_id, req.base_model, p.worst_case, held.tokens, held.micros
            )
        except (GatewayError, BillingError) as exc:
            p.future.set_exception(exc)
            return False
        # Later requests of this batch see this one as open and holding its ticket.
        held.tenant_open += 1
        held.key_open[req.api_key_id] = key_open + 1
        held.tokens += ticket.tokens
        held.micros += ticket.micros
        p.ticket = ticket
        p.grant = limits.count(p.windowed, p.worst_case, windows)
        return True

    async def _insert(self, conn: asyncpg.Connection, admitted: list[_Pending]) -> None:
        reqs = [p.req for p in admitted]
        tickets = [p.ticket or Ticket() for p in admitted]
        columns: list[list[Any]] = [
            [r.request_id for r in reqs],
            [r.tenant_id for r in reqs],
            [r.api_key_id for r in reqs],
            [r.model for r in reqs],
            [r.base_model for r in reqs],
            [r.adapter_id for r in reqs],
            [r.endpoint for r in reqs],
            [r.stream for r in reqs],
            [t.tokens for t in tickets],
            [t.micros for t in tickets],
            [p.started_at for p in admitted],
        ]
        checked = {row["request_id"]: row for row in await conn.fetch(_OPEN, self.instance_id, *columns)}
        for p in admitted:
            row = checked.get(p.req.request_id)
            if row is None or not row["key_live"]:
                p.ticket = None
                p.future.set_exception(AuthenticationFailed(_KEY_GONE))
            elif not row["tenant_live"]:
                p.ticket = None
                p.future.set_exception(PermissionDenied(_SUSPENDED, code="account_suspended"))
            elif not row["adapter_live"]:
                p.ticket = None
                p.future.set_exception(model_not_found(p.req.model))

    def closed(self, request_id: str) -> None:
        """The row is gone (usage written or discarded); called by the writer after its commit."""
        self.live.discard(request_id)


async def _lock_and_count(conn: asyncpg.Connection, tenants: list[str]) -> dict[str, _Held]:
    """Take the tenants' admission locks, then count what their open requests hold (a statement of its own:
    its snapshot is taken after the locks are granted)."""
    if not tenants:
        return {}
    await conn.execute(_LOCK, tenants)
    held = {t: _Held(key_open={}) for t in tenants}
    for row in await conn.fetch(_HELD, tenants):
        h = held[row["tenant_id"]]
        assert h.key_open is not None
        h.tenant_open += row["open"]
        h.key_open[row["api_key_id"]] = row["open"]
        h.tokens += int(row["tokens"])
        h.micros += int(row["micros"])
    return held


def _check_concurrency(limits: list[Limits], tenant_id: str, tenant_open: int, key_open: int) -> None:
    for lim in limits:
        assert lim.concurrent is not None
        open_now = tenant_open if lim.subject == f"t:{tenant_id}" else key_open
        if open_now >= lim.concurrent:
            raise RateLimited(
                f"Too many concurrent requests (limit {lim.concurrent}); retry when one has finished.",
                headers={"Retry-After": "1"},
            )
