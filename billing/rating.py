"""Rating: one usage record → one charge. Pure functions (the property tests drive these directly)."""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class PriceVersion:
    model: str
    prompt_per_million: int
    completion_per_million: int
    effective_from: datetime


FREE = PriceVersion("", 0, 0, datetime.min)


@dataclass(frozen=True, slots=True)
class Charge:
    trial_used: int
    billable_prompt: int
    billable_completion: int
    amount_micros: int
    price: PriceVersion


def price_at(versions: list[PriceVersion], at: datetime) -> PriceVersion | None:
    """The version in force at `at` (the latest effective_from ≤ at); `versions` sorted by effective_from."""
    i = bisect.bisect_right([v.effective_from for v in versions], at)
    return versions[i - 1] if i else None


def choose_price(
    book: dict[str, list[PriceVersion]], adapter_id: str | None, base_model: str, at: datetime
) -> PriceVersion:
    """An adapter's own price if it has one in force, else its base model's, else free."""
    if adapter_id and (p := price_at(book.get(adapter_id, []), at)):
        return p
    return price_at(book.get(base_model, []), at) or FREE


def rate(prompt_tokens: int, completion_tokens: int, trial_remaining: int, price: PriceVersion) -> Charge:
    """Trial tokens cover prompt tokens first, then completion tokens; the rest is charged exactly."""
    trial_used = min(max(trial_remaining, 0), prompt_tokens + completion_tokens)
    covered_prompt = min(trial_used, prompt_tokens)
    billable_prompt = prompt_tokens - covered_prompt
    billable_completion = completion_tokens - (trial_used - covered_prompt)
    amount = billable_prompt * price.prompt_per_million + billable_completion * price.completion_per_million
    return Charge(trial_used, billable_prompt, billable_completion, amount, price)
