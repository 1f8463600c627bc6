"""Money is integers. Prices: minor units (cents) per million tokens. Charges: micro-minor units, so that
tokens × price-per-million is exact with no rounding at all; rounding happens once, on invoices."""

from __future__ import annotations

MICROS_PER_MINOR = 1_000_000


def round_half_up(micros: int) -> int:
    """Micro-minor units → minor units, halves away from zero."""
    sign = -1 if micros < 0 else 1
    return sign * ((abs(micros) + MICROS_PER_MINOR // 2) // MICROS_PER_MINOR)


def split_rounded(amounts: list[int]) -> list[int]:
    """Round each amount to minor units so the parts add up to the rounded total (largest remainder)."""
    total = round_half_up(sum(amounts))
    floors = [a // MICROS_PER_MINOR for a in amounts]
    rest = total - sum(floors)
    order = sorted(range(len(amounts)), key=lambda i: amounts[i] % MICROS_PER_MINOR, reverse=True)
    out = list(floors)
    step = 1 if rest >= 0 else -1
    for i in order[: abs(rest)]:
        out[i] += step
    return out
