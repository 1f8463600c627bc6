"""Admission against rate limits. Knows nothing of HTTP beyond the header values it computes.

Requests and tokens per minute are fixed one-minute windows counted in PostgreSQL with one atomic upsert per
limited subject (tenant, key), so they are exact across every gateway process and host. Tokens are reserved
up front (prompt estimate + max_tokens) and corrected to the real count when the request settles. Concurrent
requests are counted from the open-request rows (gateway/usage/open_requests.py), also shared by all processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.db import guarded
from gateway.errors import RateLimited

_ADMIT = sa.text(
    """
    INSERT INTO rate_counters (subject, window_start, requests, tokens)
    VALUES (:s, date_trunc('minute', now()), 1, :tok)
    ON CONFLICT (subject, window_start) DO UPDATE
      SET requests = rate_counters.requests + 1, tokens = rate_counters.tokens + EXCLUDED.tokens
      WHERE (CAST(:rpm AS integer) IS NULL OR rate_counters.requests + 1 <= :rpm)
        AND (CAST(:tpm AS bigint) IS NULL OR rate_counters.tokens + EXCLUDED.tokens <= :tpm)
    RETURNING requests, tokens, window_start,
      ceil(extract(epoch FROM (window_start + interval '1 minute' - now())))::int AS reset_s
    """
)
_CURRENT = sa.text(
    """
    SELECT requests, tokens,
      ceil(extract(epoch FROM (window_start + interval '1 minute' - now())))::int AS reset_s
    FROM rate_counters WHERE subject = :s AND window_start = date_trunc('minute', now())
    """
)
_CORRECT = sa.text(
    "UPDATE rate_counters SET tokens = greatest(tokens + :delta, 0) WHERE subject = :s AND window_start = :w"
)
_PRUNE = sa.text("DELETE FROM rate_counters WHERE window_start < now() - interval '5 minutes'")


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
    windows: list[tuple[str, object]] = field(default_factory=list)  # (subject, window_start) charged
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


class RateLimiter:
    def __init__(self, db: AsyncEngine) -> None:
        self._db = db

    async def admit(self, subjects: list[Limits], tokens: int) -> Grant:
        """Count this request against every per-minute limit, or raise RateLimited (and count nothing)."""
        grant = Grant(reserved_tokens=tokens)
        limited = [s for s in subjects if s.any]
        if not limited:
            return grant
        for s in limited:
            if s.tpm is not None and tokens > s.tpm:
                raise RateLimited(
                    f"This request may use up to {tokens} tokens (prompt + max_tokens), more than the limit of "
                    f"{s.tpm} tokens per minute: lower max_tokens.",
                    param="max_tokens",
                )
        seen: list[tuple[Limits, int, int, int]] = []
        windowed = [s for s in limited if s.rpm is not None or s.tpm is not None]
        if windowed:
            async with guarded(), self._db.begin() as conn:
                for s in windowed:
                    seen.append(await self._count(conn, s, tokens, grant))
        grant.headers = _headers(seen)
        return grant

    async def _count(self, conn: AsyncConnection, s: Limits, tokens: int, grant: Grant) -> tuple[Limits, int, int, int]:
        params = {"s": s.subject, "tok": tokens, "rpm": s.rpm, "tpm": s.tpm}
        row = (await conn.execute(_ADMIT, params)).first()
        if row is None:  # over a limit: the transaction is rolled back, nothing is counted
            current = (await conn.execute(_CURRENT, {"s": s.subject})).one()
            seen = [(s, current.requests, current.tokens, current.reset_s)]
            which = "requests" if s.rpm is not None and current.requests + 1 > s.rpm else "tokens"
            raise RateLimited(
                f"Rate limit reached for {which} per minute ({s.rpm if which == 'requests' else s.tpm}). "
                f"Retry in {max(current.reset_s, 1)}s.",
                headers={**_headers(seen), "Retry-After": str(max(current.reset_s, 1))},
            )
        grant.windows.append((s.subject, row.window_start))
        return s, row.requests, row.tokens, row.reset_s

    async def settle(self, grant: Grant, used_tokens: int) -> None:
        """The request is over: correct the reserved tokens to the real count."""
        delta = used_tokens - grant.reserved_tokens
        if not grant.windows or delta == 0:
            return
        async with guarded(), self._db.begin() as conn:
            for subject, window in grant.windows:
                await conn.execute(_CORRECT, {"delta": delta, "s": subject, "w": window})
        grant.windows.clear()

    async def prune(self) -> None:
        async with guarded(), self._db.begin() as conn:
            await conn.execute(_PRUNE)
