"""What a tenant's open requests hold (concurrency slots, trial tokens, credit), read under its admission lock.

The holds are the open-request rows themselves (gateway/admission/open_requests.py), so they are shared by
every gateway process; billing/admission.py decides each new request's hold from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from billing.admission import AccountState, Admission
from billing.ledger import price_book
from billing.rating import PriceVersion
from gateway.admission import sql
from gateway.admission.limits import Limits
from gateway.errors import RateLimited


@dataclass(slots=True)
class Held:
    """What a tenant's open requests hold, updated as a batch admits more of them."""

    tenant_open: int = 0
    tokens: int = 0
    micros: int = 0
    key_open: dict[str, int] = field(default_factory=dict)

    def add(self, key_id: str, tokens: int, micros: int) -> None:
        """One more open request of `key_id`, holding `tokens` and `micros`."""
        self.tenant_open += 1
        self.key_open[key_id] = self.key_open.get(key_id, 0) + 1
        self.tokens += tokens
        self.micros += micros


async def lock_and_count(conn: asyncpg.Connection, tenants: list[str]) -> dict[str, Held]:
    """Take the tenants' admission locks (`tenants` sorted), then count what their open requests hold (a
    statement of its own: its snapshot is taken after the locks are granted)."""
    if not tenants:
        return {}
    await conn.execute(sql.LOCK_TENANTS, tenants)
    held = {t: Held() for t in tenants}
    for row in await conn.fetch(sql.HELD, tenants):
        h = held[row["tenant_id"]]
        h.tenant_open += row["open"]
        h.key_open[row["api_key_id"]] = row["open"]
        h.tokens += int(row["tokens"])
        h.micros += int(row["micros"])
    return held


async def read_accounts(
    conn: asyncpg.Connection, admission: Admission, tenants: list[str], models: set[str]
) -> tuple[dict[str, AccountState], dict[str, list[PriceVersion]]]:
    """Each tenant's account state and the price book of `models`, in `conn`'s transaction (after the holds:
    see Admission.decide_priced): a price set a moment ago by another process applies at once."""
    (row,) = await conn.fetch(sql.ACCOUNTS_AND_PRICES, tenants, sorted(models))
    return admission.states(tenants, row["states"]), price_book(row["prices"])


def check_concurrency(limits: list[Limits], tenant_id: str, tenant_open: int, key_open: int) -> None:
    """Raise RateLimited if one more request would pass a concurrency limit of the tenant or the key."""
    for lim in limits:
        assert lim.concurrent is not None
        open_now = tenant_open if lim.subject == f"t:{tenant_id}" else key_open
        if open_now >= lim.concurrent:
            raise RateLimited(
                f"Too many concurrent requests (limit {lim.concurrent}); retry when one has finished.",
                headers={"Retry-After": "1"},
            )
