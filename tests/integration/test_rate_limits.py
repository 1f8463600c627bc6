"""Rate limits: bursts over the limit get 429 with OpenAI's headers; the number admitted never exceeds it."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from typing import Any

import httpx

from tests.support.processes import GatewayProcess

CHAT = [{"role": "user", "content": "hi"}]


def fresh_window() -> None:
    """Limits are per-minute windows: do not start a burst in the last seconds of one."""
    left = 60 - time.time() % 60
    if left < 10:
        time.sleep(left + 0.5)


def call(url: str, headers: dict[str, str], max_tokens: int = 3, stream: bool = False) -> httpx.Response:
    body = {"model": "tiny-base", "messages": CHAT, "max_tokens": max_tokens, "stream": stream}
    return httpx.post(f"{url}/v1/chat/completions", headers=headers, json=body, timeout=60)


def test_requests_per_minute_burst(gateway: Any, admin: httpx.Client, make_tenant: Any) -> None:
    t = make_tenant()
    r = admin.patch(f"/admin/tenants/{t.id}", json={"rpm_limit": 3})
    assert r.status_code == 200 and r.json()["rpm_limit"] == 3
    fresh_window()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: call(gateway.url, t.headers), range(8)))
    codes = [a.status_code for a in answers]
    assert codes.count(200) == 3 and codes.count(429) == 5, codes
    for a in answers:
        assert a.headers["x-ratelimit-limit-requests"] == "3"
        assert a.headers["x-ratelimit-reset-requests"].endswith("s")
        if a.status_code == 429:
            err = a.json()["error"]
            assert err["code"] == "rate_limit_exceeded" and err["type"] == "rate_limit_error"
            assert int(a.headers["retry-after"]) >= 1 and a.headers["x-ratelimit-remaining-requests"] == "0"
    remaining = sorted(int(a.headers["x-ratelimit-remaining-requests"]) for a in answers if a.status_code == 200)
    assert remaining == [0, 1, 2]
    # back to unlimited (0): no limit, no headers
    admin.patch(f"/admin/tenants/{t.id}", json={"rpm_limit": 0})
    ok = call(gateway.url, t.headers)
    assert ok.status_code == 200 and "x-ratelimit-limit-requests" not in ok.headers


def test_tokens_per_minute_on_a_key(gateway: Any, admin: httpx.Client, make_tenant: Any, sql: Any) -> None:
    t = make_tenant()
    key = admin.post(f"/admin/tenants/{t.id}/keys", json={"name": "small", "tpm_limit": 400}).json()
    headers = {"Authorization": f"Bearer {key['key']}"}
    too_big = call(gateway.url, headers, max_tokens=500)
    assert too_big.status_code == 429 and too_big.json()["error"]["param"] == "max_tokens"
    fresh_window()
    codes = []
    for _ in range(40):
        r = call(gateway.url, headers, max_tokens=10)
        codes.append(r.status_code)
        assert r.headers["x-ratelimit-limit-tokens"] == "400"
        if r.status_code == 429:
            break
    assert codes[-1] == 429 and codes.count(200) >= 3, codes  # reservations were corrected to real counts
    used = sql.scalar(
        "SELECT sum(prompt_tokens + completion_tokens) FROM usage_records"
        " WHERE api_key_id = $1 AND started_at >= date_trunc('minute', now())",
        key["id"],
    )
    assert used <= 400
    # the tenant's other key is not limited
    assert call(gateway.url, t.headers).status_code == 200


def test_concurrent_requests_limit(gateway: Any, admin: httpx.Client, make_tenant: Any, sql: Any) -> None:
    """At most 2 at once; a request refused for concurrency is not counted in the key's per-minute window."""
    t = make_tenant()
    limits = {"max_concurrent_requests": 2, "rpm_limit": 1000}
    assert admin.patch(f"/admin/keys/{t.key_id}", json=limits).status_code == 200
    fresh_window()
    body = {"model": "tiny-base", "messages": CHAT, "max_tokens": 200, "ignore_eos": True}

    ready = threading.Barrier(8)  # all 8 sent at once: a thread started late could find the others finished

    def one(_: int) -> httpx.Response:
        with httpx.Client(timeout=60) as client:
            ready.wait(30)
            return client.post(f"{gateway.url}/v1/chat/completions", headers=t.headers, json=body)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, range(8)))
    refused = [a for a in answers if a.status_code == 429]
    assert refused and all("concurrent" in a.json()["error"]["message"] for a in refused)
    assert any(a.status_code == 200 for a in answers)
    spans = sql.fetch("SELECT started_at, finished_at FROM usage_records WHERE api_key_id = $1", t.key_id)
    events = sorted([(s["started_at"], 1) for s in spans] + [(s["finished_at"], -1) for s in spans])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert len(spans) == sum(a.status_code == 200 for a in answers) and peak <= 2
    counted = sql.scalar("SELECT sum(requests) FROM rate_counters WHERE subject = $1", f"k:{t.key_id}")
    assert counted == len(spans)


def test_bad_limit_values(admin: httpx.Client, make_tenant: Any) -> None:
    t = make_tenant()
    for bad in (-5, "ten", True):
        assert admin.patch(f"/admin/tenants/{t.id}", json={"rpm_limit": bad}).status_code == 400, bad
    # a tenant's 0 is unlimited (its null is the TENANT_* default); a key has no default: 0 means nothing there
    assert admin.patch(f"/admin/tenants/{t.id}", json={"rpm_limit": 0}).json()["rpm_limit"] == 0
    assert admin.patch(f"/admin/keys/{t.key_id}", json={"rpm_limit": 0}).status_code == 400


def test_limit_is_exact_across_two_gateway_processes(
    gateway: Any, second_gateway: GatewayProcess, admin: httpx.Client, make_tenant: Any
) -> None:
    t = make_tenant()
    admin.patch(f"/admin/tenants/{t.id}", json={"rpm_limit": 4})
    fresh_window()
    urls = [gateway.url, second_gateway.url] * 6
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(lambda u: call(u, t.headers).status_code, urls))
    assert codes.count(200) == 4 and codes.count(429) == 8, codes


def test_concurrent_requests_are_counted_once_and_corrected_exactly(
    gateway: Any, admin: httpx.Client, make_tenant: Any, sql: Any
) -> None:
    """Concurrent requests of one tenant share admission commits, their corrections share other commits (group
    commits): each request counts once in the tenant's and the key's windows, and the reserved tokens end up as
    the tokens used."""
    t = make_tenant()
    admin.patch(f"/admin/tenants/{t.id}", json={"rpm_limit": 1000, "tpm_limit": 1_000_000})
    admin.patch(f"/admin/keys/{t.key_id}", json={"rpm_limit": 1000})
    fresh_window()
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda _: call(gateway.url, t.headers, max_tokens=5), range(64)))
    assert [a.status_code for a in answers] == [200] * 64
    used = sql.scalar("SELECT sum(prompt_tokens + completion_tokens) FROM usage_records WHERE tenant_id = $1", t.id)

    def counted() -> list[tuple[str, int, int]]:
        rows = sql.fetch(
            "SELECT subject, sum(requests) AS r, sum(tokens) AS t FROM rate_counters WHERE subject = ANY($1)"
            " GROUP BY subject ORDER BY subject",
            [f"k:{t.key_id}", f"t:{t.id}"],
        )
        return [(r["subject"], r["r"], r["t"]) for r in rows]

    deadline = time.monotonic() + 10  # corrections are written with the next batch, nobody waits for them
    while counted() != [(f"k:{t.key_id}", 64, used), (f"t:{t.id}", 64, used)] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert counted() == [(f"k:{t.key_id}", 64, used), (f"t:{t.id}", 64, used)]
