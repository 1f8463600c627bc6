"""Admission control for prepaid tenants: refuse before the engine when trial and credit are used up.

Concurrent requests hold their worst-case cost (prompt estimate + max_tokens at the model's price) while in
flight. The holds live with the caller's open-request rows in PostgreSQL, so they are shared by every gateway
process and host; the caller (gateway/admission/) serializes one tenant's admissions (a transaction-scoped
lock), reads the accounts and prices, and passes in what the tenant's other open requests hold. This module
only decides: the arithmetic of the holds, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from billing.errors import InsufficientQuota
from billing.ledger import AccountDefaults
from billing.money import MICROS_PER_MINOR
from billing.rating import PriceVersion, choose_price


@dataclass(frozen=True, slots=True)
class AccountState:
    mode: str
    credit_micros: int
    trial_tokens: int

    @property
    def prepaid(self) -> bool:
        return self.mode == "prepaid"


@dataclass(frozen=True, slots=True)
class Ticket:
    """What an admitted request holds until it settles: trial tokens and credit (micro-minor units)."""

    tokens: int = 0
    micros: int = 0


class Admission:
    def __init__(self, defaults: AccountDefaults) -> None:
        self._defaults = defaults

    def states(
        self, tenant_ids: list[str], records: Iterable[tuple[str, str, int, int]] | None
    ) -> dict[str, AccountState]:
        """Each tenant's account state from (tenant, mode, credit micros, trial tokens) records; a tenant without
        an account yet gets the defaults it will be opened with."""
        found = {t: AccountState(mode, int(credit), int(trial)) for t, mode, credit, trial in records or ()}
        default = AccountState(self._defaults.mode, 0, self._defaults.trial_tokens)
        return {t: found.get(t, default) for t in tenant_ids}

    def decide_priced(
        self,
        book: dict[str, list[PriceVersion]],
        state: AccountState,
        adapter_id: str | None,
        base_model: str,
        max_tokens: int,
        held_tokens: int,
        held_micros: int,
    ) -> Ticket:
        """This request's hold, or InsufficientQuota. `held_*` is what the tenant's other open requests hold;
        read it BEFORE `state` in the same transaction: a request settling in between is then counted twice
        (held and charged), never zero times. `book` is read in the same transaction: a price set a moment
        ago by another process applies at once."""
        if not state.prepaid:
            return Ticket()
        price = choose_price(book, adapter_id, base_model, datetime.now(UTC))
        unit = max(price.prompt_per_million, price.completion_per_million)
        trial_free = max(state.trial_tokens - held_tokens, 0)
        credit_free = state.credit_micros - held_micros
        from_trial = min(trial_free, max_tokens)
        cost = (max_tokens - from_trial) * unit
        if cost > 0 and trial_free == 0 and credit_free <= 0:
            raise InsufficientQuota(
                "You exceeded your current quota: your free trial tokens and prepaid credit are used up "
                f"(balance {state.credit_micros / MICROS_PER_MINOR:.2f} {self._defaults.currency}). "
                "Add credit to continue: pay a top-up invoice or ask your operator for a credit grant."
            )
        return Ticket(from_trial, cost)
