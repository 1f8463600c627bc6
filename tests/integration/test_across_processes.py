"""Two gateway processes share one PostgreSQL: concurrency limits and prepaid credit hold across both, not per
process (the open-request rows are the shared state)."""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.conftest import ARTIFACTS
from tests.support.processes import GatewayProcess
from tests.support.sql import Sql

CHAT = [{"role": "user", "content": "Who are you?"}]


@pytest.fixture(scope="module")
def other_gateway(gateway_env: dict[str, str]) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(gateway_env, ARTIFACTS / "gateway-other.log")
    gw.start()
    yield gw
    gw.stop()


def post(url: str, headers: dict[str, str], body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", headers=headers, json=body, timeout=120)


def peak_overlap(spans: list[dict[str, Any]]) -> int:
    events = sorted([(s["started_at"], 1) for s in spans] + [(s["finished_at"], -1) for s in spans])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def test_concurrency_limit_holds_across_two_processes(
    gateway: GatewayProcess, other_gateway: GatewayProcess, admin: httpx.Client, make_tenant: Any, sql: Sql
) -> None:
    t = make_tenant()
    assert admin.patch(f"/admin/tenants/{t.id}", json={"max_concurrent_requests": 2}).status_code == 200
    body = {"model": "tiny-base", "messages": CHAT, "max_tokens": 300, "ignore_eos": True}
    urls = [gateway.url, other_gateway.url] * 5
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda u: post(u, t.headers, body), urls))
    codes = [a.status_code for a in answers]
    assert set(codes) == {200, 429}, codes
    assert all("concurrent" in a.json()["error"]["message"] for a in answers if a.status_code == 429)
    spans = sql.fetch("SELECT started_at, finished_at FROM usage_records WHERE tenant_id = $1", t.id)
    assert len(spans) == codes.count(200)
    assert peak_overlap(spans) <= 2  # per process it would have been up to 4


def test_prepaid_credit_holds_across_two_processes(
    gateway: GatewayProcess, other_gateway: GatewayProcess, admin: httpx.Client, register_adapter: Any, sql: Sql
) -> None:
    r = admin.post("/admin/tenants", json={"name": f"credit-{datetime.now().timestamp()}",
                                            "billing_mode": "prepaid", "trial_tokens": 0})  # fmt: skip
    assert r.status_code == 201, r.text
    tenant = r.json()["id"]
    key = admin.post(f"/admin/tenants/{tenant}/keys", json={"name": "k"}).json()["key"]
    headers = {"Authorization": f"Bearer {key}"}
    deployment = register_adapter(tenant, "metered", 1)["id"]
    assert admin.post("/admin/prices", json={"model": deployment, "prompt_per_million": 1_000_000,
                                             "completion_per_million": 1_000_000}).status_code == 201  # fmt: skip
    assert admin.post(f"/admin/tenants/{tenant}/credits", json={"amount": 300}).status_code == 201  # 300 tokens
    body = {"model": "metered", "messages": CHAT, "max_tokens": 8, "temperature": 0}
    worst_case = len(json.dumps(body)) + 8  # the gateway's bound: a token per prompt byte, plus max_tokens
    urls = [gateway.url, other_gateway.url] * 16
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        codes = [a.status_code for a in pool.map(lambda u: post(u, headers, body), urls)]
    assert set(codes) == {200, 429}, codes
    balance = httpx.get(f"{gateway.url}/v1/balance", headers=headers).json()["credit_balance"]
    # One request's worst case past zero at most, for both processes together.
    assert balance >= -worst_case, (balance, codes)
    assert sql.scalar("SELECT count(*) FROM usage_records WHERE tenant_id = $1", tenant) == codes.count(200)
    assert sql.scalar("SELECT count(*) FROM open_requests WHERE tenant_id = $1", tenant) == 0
