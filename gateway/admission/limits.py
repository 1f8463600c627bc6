"""Rate limits: requests and tokens per minute. Knows nothing of HTTP beyond the header values it computes.

Requests and tokens per minute are fixed one-minute windows counted in PostgreSQL, one row per limited subject
(tenant, key) and minute, so they are exact across every gateway process and host. Tokens are reserved up
front (prompt estimate + max_tokens) and corrected to the real count when the request settles. Concurrent
requests are counted from the open-request rows (gateway/admission/open_requests.py), also shared by all
processes.

A request is counted in its windows by the transaction that admits it (gateway/admission/open_requests.py, with
`lock_windows`, `refusal`, `count` and `add_counts` below): one commit for the admission, the windows and the
open row. Corrections are group-committed by RateLimiter: the ones that arrive while a transaction runs share
the next one (each counter row locked once, in sorted order, then one update), and nobody waits for them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from gateway.admission import sql
from gateway.admission.group_commit import GroupCommit
from gateway.db import guarded
from gateway.errors import RateLimited


@dataclass(frozen=True, slots=True)
class Limits:
    """A subject's limits; None means unlimited."""

    subject: str
    rpm: int | None = None
    tpm: int | None = None
    concurrent: int | None = None

    @property
    def any(self) -> bool:
        return self.rpm is not None or self.tpm is not None or self.concurrent is not None


@dataclass(slots=True)
class Grant:
    """What an admitted request holds until it settles."""

    reserved_tokens: int
    windows: list[tuple[str, datetime]] = field(default_factory=list)  # (subject, window_start) charged
    headers: dict[str, str] = field(default_factory=dict)


def _headers(limits: list[tuple[Limits, int, int, int]]) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers for the tightest limit of each kind."""
    out: dict[str, str] = {}
    reqs = [(lim.rpm, lim.rpm - used, reset) for lim, used, _, reset in limits if lim.rpm is not None]
    toks = [(lim.tpm, lim.tpm - used, reset) for lim, _, used, reset in limits if lim.tpm is not None]
    for kind, rows in (("requests", reqs), ("tokens", toks)):
        if rows:
            limit, remaining, reset = min(rows, key=lambda r: r[1])
            out[f"x-ratelimit-limit-{kind}"] = str(limit)
            out[f"x-ratelimit-remaining-{kind}"] = str(max(remaining, 0))
            out[f"x-ratelimit-reset-{kind}"] = f"{max(reset, 0)}s"
    return out


@dataclass(slots=True)
class Window:
    """A subject's current minute as the batch sees it."""

    requests: int
    tokens: int
    reset_s: int
    start: datetime


def check_request(subjects: tuple[Limits, ...], tokens: int) -> None:
    """Refuse a request that no window could ever admit (it asks for more tokens than a whole minute's)."""
    for s in subjects:
        if s.tpm is not None and tokens > s.tpm:
            raise RateLimited(
                f"This request may use up to {tokens} tokens (one per byte of the request, plus max_tokens × n), "
                f"more than the limit of {s.tpm} tokens per minute: lower max_tokens.",
                param="max_tokens",
            )


def windowed(subjects: tuple[Limits, ...]) -> list[Limits]:
    """The subjects with a per-minute limit (counted in windows)."""
    return [s for s in subjects if s.rpm is not None or s.tpm is not None]


async def lock_windows(conn: asyncpg.Connection, subjects: set[str]) -> dict[str, Window]:
    """Lock (creating them) the current minute's counter rows of `subjects`, in `conn`'s transaction."""
    if not subjects:
        return {}
    ordered = sorted(subjects)
    return {
        r["subject"]: Window(r["requests"], r["tokens"], r["reset_s"], r["window_start"])
        for r in await conn.fetch(sql.LOCK_WINDOWS, ordered, [None] * len(ordered))
    }


def refusal(subjects: list[Limits], tokens: int, windows: dict[str, Window]) -> RateLimited | None:
    """Why a request of `tokens` cannot be counted in its windows now, or None if it can."""
    for s in subjects:
        w = windows[s.subject]
        over_requests = s.rpm is not None and w.requests + 1 > s.rpm
        if over_requests or (s.tpm is not None and w.tokens + tokens > s.tpm):
            which = "requests" if over_requests else "tokens"
            retry = max(w.reset_s, 1)
            return RateLimited(
                f"Rate limit reached for {which} per minute ({s.rpm if over_requests else s.tpm}). Retry in {retry}s.",
                headers={**_headers([(s, w.requests, w.tokens, w.reset_s)]), "Retry-After": str(retry)},
            )
    return None


def count(subjects: list[Limits], tokens: int, windows: dict[str, Window]) -> Grant:
    """Count a request in its windows (in memory: `add_counts` writes them); later requests see it."""
    grant = Grant(reserved_tokens=tokens)
    seen = []
    for s in subjects:
        w = windows[s.subject]
        w.requests += 1
        w.tokens += tokens
        grant.windows.append((s.subject, w.start))
        seen.append((s, w.requests, w.tokens, w.reset_s))
    grant.headers = _headers(seen)
    return grant


async def add_counts(conn: asyncpg.Connection, grants: list[Grant]) -> None:
    """Write the counts of these grants (their rows locked by `lock_windows` in the same transaction)."""
    added: dict[tuple[str, datetime], list[int]] = defaultdict(lambda: [0, 0])
    for g in grants:
        for key in g.windows:
            added[key][0] += 1
            added[key][1] += g.reserved_tokens
    await _add(conn, added)


async def _add(conn: asyncpg.Connection, added: dict[tuple[str, datetime], list[int]]) -> None:
    if added:
        keys = sorted(added)
        await conn.execute(
            sql.ADD_TO_WINDOWS,
            [k[0] for k in keys],
            [k[1] for k in keys],
            [added[k][0] for k in keys],
            [added[k][1] for k in keys],
        )


# A token correction: (subject, window start, tokens to add, negative to give back).
_Correction = tuple[str, datetime, int]


class RateLimiter:
    """Token corrections of settled requests, group-committed; the pruning of old windows."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._corrections: GroupCommit[_Correction, None] = GroupCommit(
            pool, _correct, name="rate-limit corrections", max_batch=4096
        )

    def settle(self, grant: Grant, used_tokens: int) -> None:
        """The request is over: correct its reserved tokens to the real count, with the next batch. Nobody
        waits for it; if the database is unavailable it is dropped (the window keeps the reservation)."""
        delta = used_tokens - grant.reserved_tokens
        if grant.windows and delta != 0:
            for subject, window in grant.windows:
                self._corrections.push((subject, window, delta))
        grant.windows = []

    async def prune(self) -> None:
        async with guarded(), self._pool.acquire() as conn:
            await conn.execute(sql.PRUNE_WINDOWS)

    async def flush(self) -> None:
        """Wait until what is queued is written (at shutdown)."""
        await self._corrections.flush()


async def _correct(conn: asyncpg.Connection, corrections: list[_Correction]) -> list[None]:
    added: dict[tuple[str, datetime], list[int]] = defaultdict(lambda: [0, 0])
    for subject, window, delta in corrections:
        added[(subject, window)][1] += delta
    keys = sorted(added)
    await conn.fetch(sql.LOCK_WINDOWS, [k[0] for k in keys], [k[1] for k in keys])  # in sorted order
    await _add(conn, added)
    return [None] * len(corrections)
