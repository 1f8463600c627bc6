"""Top-up amounts: integers of minor units within the settings' bounds, the refusal naming `amount`."""

from __future__ import annotations

import pytest

from billing.errors import InvalidBillingInput
from billing.payments import check_amount
from billing.settings import BillingSettings

SETTINGS = BillingSettings(topup_min_minor=500, topup_max_minor=1_000_000)


@pytest.mark.parametrize("amount", [500, 2000, 1_000_000])
def test_amounts_within_bounds_pass(amount: int) -> None:
    check_amount(amount, SETTINGS)


@pytest.mark.parametrize("amount", [499, 1_000_001, 0, -1, True, 20.5, "2000"])
def test_amounts_outside_bounds_or_not_integers_are_refused(amount: object) -> None:
    with pytest.raises(InvalidBillingInput) as raised:
        check_amount(amount, SETTINGS)  # type: ignore[arg-type]
    assert raised.value.param == "amount" and "between 500 and 1000000" in raised.value.message
