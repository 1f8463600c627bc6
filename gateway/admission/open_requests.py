"""Open requests: each admitted request has a row in PostgreSQL until its usage is committed.

The row is committed before the engine sees the request and deleted in the transaction that writes the usage
row, so a gateway process that dies (kill -9, OOM, host loss) leaves rows behind that a surviving process
settles (gateway/usage/instances.py). The same rows carry what is shared by every gateway process and host:
concurrent requests per tenant and per key, and the prepaid holds on trial tokens and credit
(gateway/admission/holds.py). Admissions that need those counts take a transaction-scoped lock per tenant, so
the counts are exact, not per process.

Admissions are group-committed (gateway/admission/group_commit.py): the requests that arrive while one
admission transaction runs are admitted together in the next one (one lock per tenant, one read of the holds,
one lock of the rate windows, one multi-row insert, one update of the windows, one commit), and each caller
waits for that commit. The same transaction counts each admitted request in its per-minute rate windows
(gateway/admission/limits.py): a request is counted there if and only if its open row is committed.
The insert also checks that the key is still live and its tenant not suspended, so a key revoked before the
admission commits is refused whatever a cache says.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from billing.admission import AccountState, Admission, Ticket
from billing.errors import BillingError
from billing.rating import PriceVersion
from gateway.adapters.service import model_not_found
from gateway.admission import holds, limits, sql
from gateway.admission.group_commit import Again, GroupCommit
from gateway.admission.holds import Held
from gateway.admission.limits import Grant, Limits
from gateway.admission.stopwatch import Observer, ignore
from gateway.errors import AuthenticationFailed, GatewayError, PermissionDenied
from gateway.timeutil import utcnow

_KEY_GONE = "Incorrect API key provided. You can find your API key in your account settings."
_SUSPENDED = "This account is suspended: its API keys cannot be used. Contact the operator."

# An admitted request: when it was admitted (its start) and what it holds in its rate windows.
Admitted = tuple[datetime, Grant]


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


@dataclass(frozen=True, slots=True)
class _Pending:
    req: Opening
    concurrent: list[Limits]
    windowed: list[Limits]  # with a per-minute limit
    worst_case: int


@dataclass(frozen=True, slots=True)
class _Decided:
    """A request the batch admits, unless its insert finds its key, tenant or adapter gone."""

    pending: _Pending
    ticket: Ticket
    grant: Grant


class RecentTenants:
    """The tenants last seen postpaid (their admissions need no lock unless they have a concurrency limit):
    at most `size` of them, the oldest forgotten first. Forgetting one only costs a lock."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._members: dict[str, None] = {}

    def __contains__(self, tenant: object) -> bool:
        return tenant in self._members

    def __len__(self) -> int:
        return len(self._members)

    def add(self, tenant: str) -> None:
        self._members.pop(tenant, None)
        self._members[tenant] = None
        if len(self._members) > self._size:
            del self._members[next(iter(self._members))]

    def discard(self, tenant: str) -> None:
        self._members.pop(tenant, None)


class OpenRequests:
    def __init__(
        self,
        pool: asyncpg.Pool,
        admission: Admission,
        instance_id: str,
        max_batch: int = 512,
        observe: Observer = ignore,
        remember_tenants: int = 10_000,
    ) -> None:
        """`observe(seconds, requests)` is told of each admission commit."""
        self._admission = admission
        self.instance_id = instance_id
        self.live: set[str] = set()  # this process's open request ids (the rest of its rows are strays)
        self._postpaid = RecentTenants(remember_tenants)
        # An admission committed for a caller that stopped waiting (client gone): close its row, settle its grant.
        self.on_abandoned: Callable[[str, Grant], None] = lambda request_id, grant: None
        self._batches: GroupCommit[_Pending, Admitted] = GroupCommit(
            pool,
            self._admit,
            name="admission",
            max_batch=max_batch,
            observe=observe,
            committed=self._committed,
            abandoned=lambda p, admitted: self.on_abandoned(p.req.request_id, admitted[1]),
        )

    async def open(self, req: Opening, subjects: tuple[Limits, ...], worst_case: int) -> Admitted:
        """Admit against rate and concurrency limits and prepaid quota, count the rate windows and commit the
        open row; raise RateLimited, InsufficientQuota, or AuthenticationFailed / PermissionDenied for a key
        that is no longer live (nothing written then). Returns when it was admitted (the request's start) and
        what it holds in its rate windows."""
        limits.check_request(subjects, worst_case)
        concurrent = [lim for lim in subjects if lim.concurrent is not None]
        future = self._batches.submit(_Pending(req, concurrent, limits.windowed(subjects), worst_case))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            if future.done() and not future.cancelled() and future.exception() is None:
                self.on_abandoned(req.request_id, future.result()[1])  # committed just before we were cancelled
            else:
                future.cancel()  # dropped if its batch has not started; if it has, undone once committed
            raise

    def closed(self, request_id: str) -> None:
        """The row is gone (usage written or discarded); called by the writer after its commit."""
        self.live.discard(request_id)

    def _committed(self, batch: list[_Pending], outcomes: Sequence[Admitted | Exception]) -> None:
        for p, outcome in zip(batch, outcomes, strict=True):
            if not isinstance(outcome, Exception):
                self.live.add(p.req.request_id)

    async def _admit(self, conn: asyncpg.Connection, batch: list[_Pending]) -> list[Admitted | Exception]:
        """Decide every request of the batch and insert the admitted ones, in the batch's transaction."""
        tenants = sorted({p.req.tenant_id for p in batch})
        limited = {p.req.tenant_id for p in batch if p.concurrent}
        # Every tenant that may need its lock is locked first, in sorted order (batches of several processes
        # never wait for each other in a cycle); only tenants last seen postpaid and without a concurrency
        # limit are not.
        held = await holds.lock_and_count(conn, [t for t in tenants if t in limited or t not in self._postpaid])
        # After `held` (see Admission.decide_priced); the prices too, in this transaction: a price set a moment
        # ago by another process applies at once.
        models = {m for p in batch for m in (p.req.adapter_id, p.req.base_model) if m}
        states, book = await holds.read_accounts(conn, self._admission, tenants, models)
        late = [t for t in tenants if t not in held and states[t].prepaid]
        if late:  # turned prepaid since we last saw them: again (rolled back), locking them too, in order
            for t in late:
                self._postpaid.discard(t)
            raise Again
        for t in tenants:
            if states[t].prepaid:
                self._postpaid.discard(t)
            else:
                self._postpaid.add(t)
        counted = {t: held[t] for t in tenants if t in limited or states[t].prepaid}
        # The rate windows' rows are locked after the tenants' locks (in every process: no cycle). A request
        # counted here and then refused by the insert (key revoked a moment ago) is not written to the windows,
        # but later requests of this batch saw it counted, as they see it in `held`: conservative, rare.
        windows = await limits.lock_windows(conn, {s.subject for p in batch for s in p.windowed})
        outcomes: list[_Decided | Exception] = [
            self._decide(p, states[p.req.tenant_id], counted.get(p.req.tenant_id), book, windows) for p in batch
        ]
        # After the counts were read: a request admitted in a freed slot starts after the one that left.
        started_at = utcnow()
        admitted = [d for d in outcomes if isinstance(d, _Decided)]
        refused = await self._insert(conn, admitted, started_at) if admitted else {}
        await limits.add_counts(conn, [d.grant for d in admitted if d.pending.req.request_id not in refused])
        results: list[Admitted | Exception] = []
        for o in outcomes:
            if isinstance(o, Exception):
                results.append(o)
            else:
                results.append(refused.get(o.pending.req.request_id, (started_at, o.grant)))
        return results

    def _decide(
        self,
        p: _Pending,
        state: AccountState,
        held: Held | None,
        book: dict[str, list[PriceVersion]],
        windows: dict[str, limits.Window],
    ) -> _Decided | Exception:
        """Admit `p` (counted in `held` and `windows`, where later requests of the batch see it) or say why not."""
        req = p.req
        try:
            if refused := limits.refusal(p.windowed, p.worst_case, windows):
                return refused
            if held is None:  # postpaid without concurrency limits: nothing to count
                ticket = self._admission.decide_priced(book, state, req.adapter_id, req.base_model, p.worst_case, 0, 0)
                return _Decided(p, ticket, limits.count(p.windowed, p.worst_case, windows))
            holds.check_concurrency(p.concurrent, req.tenant_id, held.tenant_open, held.key_open.get(req.api_key_id, 0))
            ticket = self._admission.decide_priced(
                book, state, req.adapter_id, req.base_model, p.worst_case, held.tokens, held.micros
            )
        except (GatewayError, BillingError) as exc:
            return exc
        held.add(req.api_key_id, ticket.tokens, ticket.micros)
        return _Decided(p, ticket, limits.count(p.windowed, p.worst_case, windows))

    async def _insert(
        self, conn: asyncpg.Connection, admitted: list[_Decided], started_at: datetime
    ) -> dict[str, Exception]:
        """Insert the open rows of `admitted`; the requests refused because their key, tenant or adapter is
        gone, with why."""
        reqs = [d.pending.req for d in admitted]
        columns: list[list[Any]] = [
            [r.request_id for r in reqs],
            [r.tenant_id for r in reqs],
            [r.api_key_id for r in reqs],
            [r.model for r in reqs],
            [r.base_model for r in reqs],
            [r.adapter_id for r in reqs],
            [r.endpoint for r in reqs],
            [r.stream for r in reqs],
            [d.ticket.tokens for d in admitted],
            [d.ticket.micros for d in admitted],
            [started_at] * len(admitted),
        ]
        checked = {row["request_id"]: row for row in await conn.fetch(sql.OPEN, self.instance_id, *columns)}
        refused: dict[str, Exception] = {}
        for r in reqs:
            row = checked.get(r.request_id)
            if row is None or not row["key_live"]:
                refused[r.request_id] = AuthenticationFailed(_KEY_GONE)
            elif not row["tenant_live"]:
                refused[r.request_id] = PermissionDenied(_SUSPENDED, code="account_suspended")
            elif not row["adapter_live"]:
                refused[r.request_id] = model_not_found(r.model)
        return refused
