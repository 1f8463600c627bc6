"""What the admission path keeps per tenant in memory is bounded, however many tenants it sees."""

from __future__ import annotations

from typing import Any

from billing.admission import Admission
from billing.ledger import AccountDefaults
from gateway.admission.open_requests import OpenRequests, RecentTenants


def test_recent_tenants_keeps_at_most_its_size_forgetting_the_oldest() -> None:
    seen = RecentTenants(3)
    for t in ("a", "b", "c", "d", "e"):
        seen.add(t)
    assert len(seen) == 3
    assert [t for t in "abcde" if t in seen] == ["c", "d", "e"]


def test_a_tenant_seen_again_is_kept_longer() -> None:
    seen = RecentTenants(2)
    seen.add("a")
    seen.add("b")
    seen.add("a")  # seen again: now the newest
    seen.add("c")
    assert "a" in seen and "c" in seen and "b" not in seen


def test_a_discarded_tenant_is_forgotten() -> None:
    seen = RecentTenants(2)
    seen.add("a")
    seen.discard("a")
    seen.discard("never seen")
    assert "a" not in seen and len(seen) == 0


def test_open_requests_remembers_a_bounded_number_of_tenants() -> None:
    pool: Any = None  # not used until a request is admitted
    opens = OpenRequests(pool, Admission(AccountDefaults("postpaid", 0, "usd")), "gw_test", remember_tenants=100)
    for i in range(10_000):
        opens._postpaid.add(f"tnt_{i}")
    assert len(opens._postpaid) == 100
