"""Admission control for prepaid tenants: refuse before the engine when trial and credit are used up.

Concurrent requests reserve their worst-case cost (prompt estimate + max_tokens at the model's price) in
this process while in flight, so racing requests overdraw a small balance by at most what the in-flight
requests can cost. (Reservations are per process: with several gateway processes the bound is per process.)
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.errors import InsufficientQuota
from billing.ledger import AccountDefaults, price_book
from billing.money import MICROS_PER_MINOR
from billing.rating import PriceVersion, choose_price

_STATE = sa.text(
    """
    SELECT a.mode, coalesce(l.balance_after_micros, 0) AS credit, coalesce(l.trial_after, 0) AS trial
    FROM billing_accounts a
    LEFT JOIN LATERAL (
        SELECT balance_after_micros, trial_after FROM ledger_entries
        WHERE tenant_id = a.tenant_id ORDER BY id DESC LIMIT 1
    ) l ON true
    WHERE a.tenant_id = :t
    """
)


@dataclass(slots=True)
class Ticket:
    tenant_id: str
    tokens: int = 0
    micros: int = 0


class Admission:
    def __init__(self, db: AsyncEngine, defaults: AccountDefaults, price_cache_seconds: float = 5.0) -> None:
        self._db = db
        self._defaults = defaults
        self._ttl = price_cache_seconds
        self._book: dict[str, list[PriceVersion]] = {}
        self._book_at = float("-inf")
        self._tokens: dict[str, int] = defaultdict(int)
        self._micros: dict[str, int] = defaultdict(int)
        # Every reservation ever made, per tenant: lets admit() count the ones made while it read the ledger.
        self._added_tokens: dict[str, int] = defaultdict(int)
        self._added_micros: dict[str, int] = defaultdict(int)

    def forget_prices(self) -> None:
        """Reload the price book on the next admission (called when this process changes a price;
        other processes notice within price_cache_seconds)."""
        self._book_at = float("-inf")

    async def _prices(self) -> dict[str, list[PriceVersion]]:
        if time.monotonic() - self._book_at > self._ttl:
            async with self._db.connect() as conn:
                self._book = await price_book(conn)
            self._book_at = time.monotonic()
        return self._book

    async def admit(self, tenant_id: str, adapter_id: str | None, base_model: str, max_tokens: int) -> Ticket:
        """Reserve this request's worst case, or raise InsufficientQuota (nothing is reserved then).

        A request that settles while we read the ledger may be missing from what we read, so we count the
        reservations as they were *before* the read (released or not) plus any made during it.
        """
        held_tokens, held_micros = self._tokens[tenant_id], self._micros[tenant_id]
        added_tokens, added_micros = self._added_tokens[tenant_id], self._added_micros[tenant_id]
        async with self._db.connect() as conn:
            row = (await conn.execute(_STATE, {"t": tenant_id})).first()
        mode, credit, trial = (
            (row.mode, row.credit, row.trial) if row else (self._defaults.mode, 0, self._defaults.trial_tokens)
        )
        if mode != "prepaid":
            return Ticket(tenant_id)
        price = choose_price(await self._prices(), adapter_id, base_model, datetime.now(UTC))
        unit = max(price.prompt_per_million, price.completion_per_million)
        trial_free = max(trial - held_tokens - (self._added_tokens[tenant_id] - added_tokens), 0)
        credit_free = credit - held_micros - (self._added_micros[tenant_id] - added_micros)
        from_trial = min(trial_free, max_tokens)
        cost = (max_tokens - from_trial) * unit
        if cost > 0 and trial_free == 0 and credit_free <= 0:
            raise InsufficientQuota(
                "You exceeded your current quota: your free trial tokens and prepaid credit are used up "
                f"(balance {credit / MICROS_PER_MINOR:.2f} {self._defaults.currency}). Add credit to continue: "
                "pay a top-up invoice or ask your operator for a credit grant."
            )
        ticket = Ticket(tenant_id, from_trial, cost)
        self._tokens[tenant_id] += ticket.tokens
        self._micros[tenant_id] += ticket.micros
        self._added_tokens[tenant_id] += ticket.tokens
        self._added_micros[tenant_id] += ticket.micros
        return ticket

    def release(self, ticket: Ticket) -> None:
        """The request is settled (its charge is in the ledger) or failed: drop its reservation."""
        self._tokens[ticket.tenant_id] -= ticket.tokens
        self._micros[ticket.tenant_id] -= ticket.micros
