"""Two gateway processes share one PostgreSQL: concurrency limits and prepaid credit hold across both, not per
process (the open-request rows are the shared state), and they never both load the same adapter."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
import time
from datetime import datetime
from typing import Any

import asyncpg
import httpx
from prometheus_client.parser import text_string_to_metric_families

from devstack.engine import LocalEngine
from tests.support.processes import GatewayProcess
from tests.support.sql import Sql

CHAT = [{"role": "user", "content": "Who are you?"}]


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
    gateway: GatewayProcess, second_gateway: GatewayProcess, admin: httpx.Client, make_tenant: Any, sql: Sql
) -> None:
    t = make_tenant()
    assert admin.patch(f"/admin/tenants/{t.id}", json={"max_concurrent_requests": 2}).status_code == 200
    body = {"model": "tiny-base", "messages": CHAT, "max_tokens": 300, "ignore_eos": True}
    urls = [gateway.url, second_gateway.url] * 5
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda u: post(u, t.headers, body), urls))
    codes = [a.status_code for a in answers]
    assert set(codes) == {200, 429}, codes
    assert all("concurrent" in a.json()["error"]["message"] for a in answers if a.status_code == 429)
    spans = sql.fetch("SELECT started_at, finished_at FROM usage_records WHERE tenant_id = $1", t.id)
    assert len(spans) == codes.count(200)
    assert peak_overlap(spans) <= 2  # per process it would have been up to 4


def test_prepaid_credit_holds_across_two_processes(
    gateway: GatewayProcess, second_gateway: GatewayProcess, admin: httpx.Client, register_adapter: Any, sql: Sql
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
    urls = [gateway.url, second_gateway.url] * 16
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        codes = [a.status_code for a in pool.map(lambda u: post(u, headers, body), urls)]
    assert set(codes) == {200, 429}, codes
    balance = httpx.get(f"{gateway.url}/v1/balance", headers=headers).json()["credit_balance"]
    # One request's worst case past zero at most, for both processes together.
    assert balance >= -worst_case, (balance, codes)
    assert sql.scalar("SELECT count(*) FROM usage_records WHERE tenant_id = $1", tenant) == codes.count(200)
    assert sql.scalar("SELECT count(*) FROM open_requests WHERE tenant_id = $1", tenant) == 0


def loads(metrics_url: str) -> dict[str, float]:
    """gateway_adapter_loads_total by result."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{metrics_url}/metrics").text):
        if family.name == "gateway_adapter_loads":
            for s in family.samples:
                if s.name.endswith("_total"):
                    out[s.labels["result"]] = out.get(s.labels["result"], 0) + s.value
    return out


def test_adapter_loads_wait_for_the_lock_every_process_shares(
    gateway: GatewayProcess,
    second_gateway: GatewayProcess,
    engine: LocalEngine,
    make_tenant: Any,
    register_adapter: Any,
    database_url: str,
) -> None:
    t = make_tenant()
    deployment = register_adapter(t.id, "shared", 2)["id"]
    body = {"model": "shared", "messages": CHAT, "max_tokens": 2}
    for url in (gateway.url, second_gateway.url):  # both processes now believe the engine holds it
        assert post(url, t.headers, body).status_code == 200
    # The engine forgets it behind their backs.
    r = httpx.post(f"{engine.url}/v1/unload_lora_adapter", json={"lora_name": deployment})
    assert r.status_code == 200, r.text

    # Someone else (here: the test, as a third process would) holds the load lock for it on that engine.
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        async def run() -> None:
            conn = await asyncpg.connect(database_url)
            try:
                await conn.execute("SELECT pg_advisory_lock(hashtextextended($1, 4417))", f"{engine.url}|{deployment}")
                locked.set()
                await asyncio.get_running_loop().run_in_executor(None, release.wait)
            finally:
                await conn.close()

        asyncio.run(run())

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    try:
        assert locked.wait(10)
        before = [loads(u) for u in (gateway.metrics_url, second_gateway.metrics_url)]
        urls = [gateway.url, second_gateway.url] * 2
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            pending = [pool.submit(post, u, t.headers, body) for u in urls]
            time.sleep(3)
            waiting = not any(f.done() for f in pending)  # both processes wait for the lock, neither loads
            on_engine = {m["id"] for m in httpx.get(f"{engine.url}/v1/models").json()["data"]}
            release.set()
            assert waiting and deployment not in on_engine
            assert [f.result(timeout=60).status_code for f in pending] == [200] * 4
    finally:
        release.set()
        holder.join(10)
    after = [loads(u) for u in (gateway.metrics_url, second_gateway.metrics_url)]
    fresh = sum(a.get("loaded", 0) - b.get("loaded", 0) for a, b in zip(after, before, strict=True))
    assert fresh == 1  # one process loaded it; the other found it there
