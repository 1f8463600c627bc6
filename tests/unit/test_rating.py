"""Property tests of rating and invoice rounding (pure functions)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from billing.money import MICROS_PER_MINOR, round_half_up, split_rounded
from billing.rating import PriceVersion, choose_price, price_at, rate

T0 = datetime(2026, 1, 1, tzinfo=UTC)
prices = st.builds(
    PriceVersion,
    st.just("m"),
    st.integers(0, 10**7),
    st.integers(0, 10**7),
    st.integers(0, 10**6).map(lambda s: T0 + timedelta(seconds=s)),
)


@given(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(-10, 3 * 10**6), prices)
def test_rate_splits_tokens_between_trial_and_money_exactly(p: int, c: int, trial: int, price: PriceVersion) -> None:
    charge = rate(p, c, trial, price)
    assert charge.trial_used == min(max(trial, 0), p + c)
    assert charge.trial_used + charge.billable_prompt + charge.billable_completion == p + c
    assert 0 <= charge.billable_prompt <= p and 0 <= charge.billable_completion <= c
    # trial covers prompt tokens first
    assert charge.billable_prompt == 0 or charge.billable_completion == c
    assert charge.amount_micros == charge.billable_prompt * price.prompt_per_million + (
        charge.billable_completion * price.completion_per_million
    )


@given(st.lists(prices, min_size=1, max_size=8, unique_by=lambda v: v.effective_from), st.integers(-100, 2 * 10**6))
def test_price_in_force_is_the_latest_started(versions: list[PriceVersion], offset: int) -> None:
    versions.sort(key=lambda v: v.effective_from)
    at = T0 + timedelta(seconds=offset)
    chosen = price_at(versions, at)
    started = [v for v in versions if v.effective_from <= at]
    assert chosen == (max(started, key=lambda v: v.effective_from) if started else None)


def test_adapter_price_overrides_base_price() -> None:
    base = PriceVersion("base", 10, 20, T0)
    own = PriceVersion("mif-x", 1, 2, T0 + timedelta(days=1))
    book = {"base": [base], "mif-x": [own]}
    assert choose_price(book, "mif-x", "base", T0) == base  # the adapter's price was not in force yet
    assert choose_price(book, "mif-x", "base", T0 + timedelta(days=2)) == own
    assert choose_price(book, None, "other", T0).prompt_per_million == 0


@given(st.lists(st.integers(0, 10**12), min_size=1, max_size=30))
def test_rounded_lines_add_up_to_the_rounded_total(amounts: list[int]) -> None:
    lines = split_rounded(amounts)
    assert sum(lines) == round_half_up(sum(amounts))
    assert all(abs(line * MICROS_PER_MINOR - a) < MICROS_PER_MINOR for line, a in zip(lines, amounts, strict=True))


def test_round_half_up() -> None:
    assert round_half_up(499_999) == 0 and round_half_up(500_000) == 1 and round_half_up(1_500_000) == 2
