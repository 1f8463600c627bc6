"""Numbers, money and times as people read them; registered as Jinja filters."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from billing.money import MICROS_PER_MINOR

# ISO 4217 currencies without a minor unit: one "minor" unit is the whole unit.
_ZERO_DECIMAL = {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf",
                 "xof", "xpf"}  # fmt: skip
_SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£", "jpy": "¥", "cny": "¥", "inr": "₹"}


def number(value: Any) -> str:
    """12,345 — or an en dash for nothing."""
    if value is None:
        return "–"
    return f"{int(value):,}"


def compact(value: Any) -> str:
    """1.2k, 3.4M: for headline figures."""
    n = int(value or 0)
    for size, suffix in ((1_000_000_000, "B"), (1_000_000, "M"), (1_000, "k")):
        if abs(n) >= size:
            return f"{n / size:.1f}".rstrip("0").rstrip(".") + suffix
    return str(n)


def minor_per_major(currency: str) -> int:
    return 1 if currency.lower() in _ZERO_DECIMAL else 100


def money(micros: Any, currency: str = "usd") -> str:
    """Micro-minor units as currency: $1,234.56; amounts under one cent keep four decimals ($0.0012)."""
    code = currency.lower()
    major = Decimal(int(micros or 0)) / MICROS_PER_MINOR / minor_per_major(code)
    places = 0 if code in _ZERO_DECIMAL else 2
    if major and abs(major) < Decimal(1) / 10**places:
        places += 4 if places == 0 else 2
    text = f"{abs(major):,.{places}f}"
    symbol = _SYMBOLS.get(code)
    sign = "−" if major < 0 else ""
    return f"{sign}{symbol}{text}" if symbol else f"{sign}{text} {code.upper()}"


def percent(value: Any) -> str:
    v = float(value or 0) * 100
    return f"{v:.1f}%" if v < 10 else f"{v:.0f}%"


def when(value: datetime | None) -> str:
    """2025-03-04 14:05 UTC, or an en dash."""
    if value is None:
        return "–"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def ago(value: datetime | None, now: datetime | None = None) -> str:
    """'3 min ago', for last-use columns."""
    if value is None:
        return "never"
    seconds = int(((now or datetime.now(UTC)) - value).total_seconds())
    if seconds < 60:
        return "just now"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return "just now"  # unreachable; keeps mypy's return check simple


FILTERS = {"number": number, "compact": compact, "money": money, "percent": percent, "when": when, "ago": ago}
