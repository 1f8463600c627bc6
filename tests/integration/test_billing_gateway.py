"""Billing through the real gateway and engine: trial, exhaustion, 429, top-up, prices, invoices."""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx

from tests.support.sql import Sql

CHAT = [{"role": "user", "content": "Who are you?"}]


def tenant_with_adapter(admin: httpx.Client, register_adapter: Any, **billing: Any) -> dict[str, Any]:
    t = admin.post("/admin/tenants", json={"name": f"bill-{datetime.now().timestamp()}", **billing})
    assert t.status_code == 201, t.text
    key = admin.post(f"/admin/tenants/{t.json()['id']}/keys", json={"name": "k"}).json()["key"]
    dep = register_adapter(t.json()["id"], "priced", 1)
    return {"id": t.json()["id"], "key": key, "deployment": dep["id"], "headers": {"Authorization": f"Bearer {key}"}}


def call(gateway: Any, t: dict[str, Any], max_tokens: int = 8) -> httpx.Response:
    body = {"model": "priced", "messages": CHAT, "max_tokens": max_tokens, "temperature": 0}
    return httpx.post(f"{gateway.url}/v1/chat/completions", headers=t["headers"], json=body, timeout=60)


def test_trial_then_429_then_top_up(gateway: Any, admin: httpx.Client, register_adapter: Any, sql: Sql) -> None:
    t = tenant_with_adapter(admin, register_adapter, billing_mode="prepaid", trial_tokens=40)
    # 1 cent per prompt token, 2 cents per completion token, for this deployment only
    r = admin.post("/admin/prices", json={"model": t["deployment"], "prompt_per_million": 1_000_000,
                                          "completion_per_million": 2_000_000, "currency": "usd"})  # fmt: skip
    assert r.status_code == 201, r.text
    assert httpx.get(f"{gateway.url}/v1/balance", headers=t["headers"]).json()["trial_tokens_remaining"] == 40

    statuses = []
    for _ in range(10):
        r = call(gateway, t)
        statuses.append(r.status_code)
        if r.status_code == 429:
            break
    assert statuses[-1] == 429 and set(statuses[:-1]) == {200}, statuses
    err = r.json()["error"]
    assert err["code"] == "insufficient_quota" and err["type"] == "insufficient_quota"
    assert "credit" in err["message"]
    refused = sql.scalar("SELECT count(*) FROM usage_records WHERE tenant_id = $1", t["id"])
    assert refused == len(statuses) - 1  # the refused call never reached the engine

    balance = httpx.get(f"{gateway.url}/v1/balance", headers=t["headers"]).json()
    assert balance["trial_tokens_remaining"] == 0 and balance["billing_mode"] == "prepaid"
    charged = sql.scalar("SELECT -sum(amount_micros) FROM ledger_entries WHERE tenant_id = $1", t["id"])
    assert charged > 0 and Decimal(balance["credit_balance_exact"]) == Decimal(-charged) / 1_000_000
    assert balance["credit_balance"] < 0

    credit = admin.post(f"/admin/tenants/{t['id']}/credits", json={"amount": 1000, "note": "top-up"})
    assert credit.status_code == 201, credit.text
    assert call(gateway, t).status_code == 200

    # usage with cost equals the ledger, which equals the usage table's tokens
    usage = httpx.get(f"{gateway.url}/v1/usage", headers=t["headers"]).json()["data"]
    assert sum(u["prompt_tokens"] for u in usage) == sql.scalar(
        "SELECT sum(prompt_tokens) FROM usage_records WHERE tenant_id = $1", t["id"]
    )
    assert sum(u["cost_micros"] for u in usage) == sql.scalar(
        "SELECT -sum(amount_micros) FROM ledger_entries WHERE tenant_id = $1 AND kind = 'charge'", t["id"]
    )
    assert all(u["model"] == t["deployment"] for u in usage)


def test_idle_deployments_cost_nothing(gateway: Any, admin: httpx.Client, register_adapter: Any) -> None:
    t = tenant_with_adapter(admin, register_adapter, billing_mode="postpaid", trial_tokens=0)
    register_adapter(t["id"], "another", 2)
    admin.post("/admin/prices", json={"model": "tiny-base", "prompt_per_million": 0, "completion_per_million": 0,
                                      "effective_from": "2020-01-01T00:00:00Z"})  # fmt: skip
    balance = httpx.get(f"{gateway.url}/v1/balance", headers=t["headers"]).json()
    assert balance["credit_balance"] == 0 and balance["credit_balance_exact"] == "0"
    assert httpx.get(f"{gateway.url}/v1/usage", headers=t["headers"]).json()["data"] == []
    period = datetime.now(UTC).strftime("%Y-%m")
    closed = admin.post("/admin/billing/close-period", json={"period": period}).json()["data"]
    assert t["id"] not in {i["tenant_id"] for i in closed}


def test_concurrent_requests_overdraw_at_most_one_requests_worst_case(
    gateway: Any, admin: httpx.Client, register_adapter: Any, sql: Sql
) -> None:
    t = tenant_with_adapter(admin, register_adapter, billing_mode="prepaid", trial_tokens=0)
    admin.post("/admin/prices", json={"model": t["deployment"], "prompt_per_million": 1_000_000,
                                      "completion_per_million": 1_000_000})  # fmt: skip
    admin.post(f"/admin/tenants/{t['id']}/credits", json={"amount": 300})  # 300 cents = 300 tokens
    body_bytes = len(json.dumps({"model": "priced", "messages": CHAT, "max_tokens": 8, "temperature": 0}))
    worst_case_cents = body_bytes + 8  # the gateway's bound: one token per prompt byte, plus max_tokens

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(lambda _: call(gateway, t).status_code, range(32)))
    assert set(codes) <= {200, 429} and 200 in codes and 429 in codes, codes
    final = httpx.get(f"{gateway.url}/v1/balance", headers=t["headers"]).json()
    assert final["credit_balance"] >= -worst_case_cents, (final, codes)
    assert sql.scalar("SELECT count(*) FROM usage_records WHERE tenant_id = $1", t["id"]) == codes.count(200)


def test_close_period_is_idempotent_and_lines_add_up(gateway: Any, admin: httpx.Client, register_adapter: Any) -> None:
    t = tenant_with_adapter(admin, register_adapter, billing_mode="postpaid", trial_tokens=0)
    admin.post("/admin/prices", json={"model": t["deployment"], "prompt_per_million": 333_333,
                                      "completion_per_million": 777_777})  # fmt: skip
    for _ in range(3):
        assert call(gateway, t).status_code == 200
    period = datetime.now(UTC).strftime("%Y-%m")
    first = admin.post("/admin/billing/close-period", json={"period": period})
    second = admin.post("/admin/billing/close-period", json={"period": period})
    assert first.status_code == second.status_code == 200
    mine = [i for i in first.json()["data"] if i["tenant_id"] == t["id"]]
    assert len(mine) == 1 and mine == [i for i in second.json()["data"] if i["tenant_id"] == t["id"]]
    inv = mine[0]
    assert inv["total"] == sum(line["amount"] for line in inv["lines"])
    assert inv["total_micros"] == sum(line["amount_micros"] for line in inv["lines"]) > 0
    listed = httpx.get(f"{gateway.url}/v1/invoices", headers=t["headers"]).json()["data"]
    assert [i["id"] for i in listed] == [inv["id"]]
    assert admin.get(f"/admin/tenants/{t['id']}/invoices").json()["data"][0]["id"] == inv["id"]
    assert admin.post("/admin/billing/close-period", json={"period": "11-2026"}).status_code == 400


def test_reconciliation_finds_no_difference_and_flags_a_planted_one(
    gateway: Any, admin: httpx.Client, register_adapter: Any, sql: Sql, gateway_env: dict[str, str]
) -> None:
    t = tenant_with_adapter(admin, register_adapter, billing_mode="postpaid", trial_tokens=10)
    for _ in range(2):
        assert call(gateway, t).status_code == 200
    period = datetime.now(UTC).strftime("%Y-%m")
    admin.post("/admin/billing/close-period", json={"period": period})
    report = {r["tenant_id"]: r for r in admin.get("/admin/billing/reconcile").json()["data"]}
    assert report[t["id"]]["problems"] == [] and report[t["id"]]["usage_tokens"] > 0
    assert report[t["id"]]["invoiced_tokens"] == report[t["id"]]["usage_tokens"]

    # a usage row that was never charged: the report must say so, and the CLI must fail
    planted = tenant_with_adapter(admin, register_adapter, billing_mode="postpaid", trial_tokens=0)
    sql.fetch(
        "INSERT INTO usage_records (request_id, tenant_id, api_key_id, model, base_model, endpoint, stream,"
        " prompt_tokens, completion_tokens, status, http_status, started_at, finished_at, latency_ms)"
        " SELECT 'req_planted_' || $1, $1, id, 'x', 'tiny-base', '/v1/completions', false, 5, 5, 'ok', 200,"
        " now(), now(), 1 FROM api_keys WHERE tenant_id = $1",
        planted["id"],
    )
    report = {r["tenant_id"]: r for r in admin.get("/admin/billing/reconcile").json()["data"]}
    assert report[planted["id"]]["problems"] and "charged 0/0" in report[planted["id"]]["problems"][0]
    cli = subprocess.run(
        [sys.executable, "-m", "gateway", "billing", "reconcile"],
        env={**os.environ, **gateway_env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 1 and "MISMATCH" in cli.stdout
