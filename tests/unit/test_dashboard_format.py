"""The dashboard's number, money and time-bucket formatting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.dashboard.format import ago, compact, money, number, percent
from gateway.dashboard.service import WINDOWS, bucket_keys


def test_numbers_for_people() -> None:
    assert number(1234567) == "1,234,567" and number(None) == "–"
    assert compact(999) == "999" and compact(1200) == "1.2k" and compact(3_000_000) == "3M"
    assert percent(0.0912) == "9.1%" and percent(0.5) == "50%" and percent(0) == "0.0%"


def test_money_from_micro_minor_units() -> None:
    assert money(123_456_000_000, "usd") == "$1,234.56"
    assert money(0, "usd") == "$0.00"
    assert money(120_000, "usd") == "$0.0012"  # a fraction of a cent stays visible
    assert money(-250_000_000, "eur") == "−€2.50"
    assert money(1_500_000_000, "jpy") == "¥1,500"
    assert money(100_000_000, "chf") == "1.00 CHF"


def test_ago() -> None:
    now = datetime(2025, 3, 4, 12, 0, tzinfo=UTC)
    assert ago(None) == "never"
    assert ago(now - timedelta(seconds=5), now) == "just now"
    assert ago(now - timedelta(minutes=3), now) == "3 min ago"
    assert ago(now - timedelta(hours=26), now) == "1 d ago"


def test_buckets_cover_the_window_in_the_query_format() -> None:
    now = datetime(2025, 3, 4, 12, 30, tzinfo=UTC)
    hours = bucket_keys(WINDOWS["24h"], now)
    assert hours[0] == "2025-03-03T12:00Z" and hours[-1] == "2025-03-04T12:00Z" and len(hours) == 25
    days = bucket_keys(WINDOWS["30d"], now)
    assert days[0] == "2025-02-02" and days[-1] == "2025-03-04" and len(set(days)) == len(days) == 31
