"""The operator's API: tenants, suspension, keys, deployments, usage queries (JSON = CSV = SQL), audit."""

from __future__ import annotations

import csv
import io
import secrets
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.migrate import alembic_config
from tests.support.sql import Sql

CHAT = [{"role": "user", "content": "hi"}]
ADMIN_ROUTES = [
    ("GET", "/admin/tenants"),
    ("POST", "/admin/tenants"),
    ("GET", "/admin/tenants/tnt_x"),
    ("PATCH", "/admin/tenants/tnt_x"),
    ("GET", "/admin/tenants/tnt_x/keys"),
    ("POST", "/admin/tenants/tnt_x/keys"),
    ("DELETE", "/admin/keys/key_x"),
    ("GET", "/admin/deployments"),
    ("GET", "/admin/usage"),
    ("GET", "/admin/usage.csv"),
    ("GET", "/admin/audit"),
    ("POST", "/admin/prices"),
    ("GET", "/admin/prices"),
    ("POST", "/admin/tenants/tnt_x/credits"),
    ("POST", "/admin/billing/close-period"),
    ("GET", "/admin/billing/reconcile"),
]


def chat(gateway: Any, headers: dict[str, str]) -> httpx.Response:
    body = {"model": "tiny-base", "messages": CHAT, "max_tokens": 3}
    return httpx.post(f"{gateway.url}/v1/chat/completions", headers=headers, json=body)


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
def test_admin_routes_need_the_admin_token(gateway: Any, make_tenant: Any, method: str, path: str) -> None:
    tenant = make_tenant()
    for headers in ({}, {"Authorization": "Bearer wrong"}, tenant.headers):
        r = httpx.request(method, f"{gateway.url}{path}", headers=headers, json={})
        assert r.status_code == 401, (headers, r.text)
        assert r.json()["error"]["code"] in ("invalid_admin_token", "missing_api_key")


def test_suspend_and_resume_a_tenant(gateway: Any, admin: httpx.Client, make_tenant: Any, sql: Sql) -> None:
    t = make_tenant()
    assert chat(gateway, t.headers).status_code == 200
    r = admin.patch(f"/admin/tenants/{t.id}", json={"suspended": True})
    assert r.status_code == 200 and r.json()["suspended"] is True
    refused = chat(gateway, t.headers)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "account_suspended"
    assert "suspended" in refused.json()["error"]["message"]
    assert sql.scalar("SELECT count(*) FROM api_keys WHERE tenant_id = $1 AND revoked_at IS NULL", t.id) == 1
    assert admin.patch(f"/admin/tenants/{t.id}", json={"suspended": False}).json()["suspended"] is False
    assert chat(gateway, t.headers).status_code == 200
    renamed = admin.patch(f"/admin/tenants/{t.id}", json={"name": f"renamed-{t.id}"})
    assert renamed.json()["name"] == f"renamed-{t.id}"
    assert admin.patch("/admin/tenants/tnt_nope", json={"suspended": True}).status_code == 404
    listed = {x["id"]: x for x in admin.get("/admin/tenants").json()["data"]}
    assert listed[t.id]["active_keys"] == 1 and listed[t.id]["suspended"] is False


@pytest.mark.parametrize(
    ("terms", "param"), [({"billing_mode": "monthly"}, "billing_mode"), ({"trial_tokens": -1}, "trial_tokens")]
)
def test_a_tenant_on_bad_billing_terms_is_refused_and_not_created(
    admin: httpx.Client, sql: Sql, terms: dict[str, Any], param: str
) -> None:
    name = f"bad-terms-{secrets.token_hex(4)}"
    r = admin.post("/admin/tenants", json={"name": name, **terms})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param and r.json()["error"]["type"] == "invalid_request_error"
    assert sql.scalar("SELECT count(*) FROM tenants WHERE name = $1", name) == 0


def test_keys_listing_and_expiry(gateway: Any, admin: httpx.Client, make_tenant: Any) -> None:
    t = make_tenant()
    assert chat(gateway, t.headers).status_code == 200
    [key] = admin.get(f"/admin/tenants/{t.id}/keys").json()["data"]
    assert key["id"] == t.key_id and t.key.startswith(key["prefix"]) and key["last_used_at"] is not None
    assert "key_hash" not in key and t.key not in str(key)

    soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    short = admin.post(f"/admin/tenants/{t.id}/keys", json={"name": "short", "expires_at": soon}).json()
    headers = {"Authorization": f"Bearer {short['key']}"}
    assert chat(gateway, headers).status_code == 200
    time.sleep(2.2)
    expired = chat(gateway, headers)
    assert expired.status_code == 401 and expired.json()["error"]["code"] == "invalid_api_key"
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    assert admin.post(f"/admin/tenants/{t.id}/keys", json={"expires_at": past}).status_code == 400


def test_usage_query_equals_sql_and_csv_equals_json(
    gateway: Any, admin: httpx.Client, make_tenant: Any, register_adapter: Any, sql: Sql
) -> None:
    t = make_tenant()
    dep = register_adapter(t.id, "usage-probe", 2)
    for model in ("tiny-base", "usage-probe", "usage-probe"):
        body = {"model": model, "messages": CHAT, "max_tokens": 4}
        assert httpx.post(f"{gateway.url}/v1/chat/completions", headers=t.headers, json=body).status_code == 200
    r = admin.get("/admin/usage", params={"tenant_id": t.id, "group_by": "model"}).json()
    by_model = {row["model"]: row for row in r["data"]}
    expected = sql.fetch(
        "SELECT coalesce(adapter_id, base_model) AS model, count(*) AS requests, sum(prompt_tokens) AS p,"
        " sum(completion_tokens) AS c FROM usage_records WHERE tenant_id = $1 GROUP BY 1",
        t.id,
    )
    assert {e["model"]: (e["requests"], e["p"], e["c"]) for e in expected} == {
        m: (row["requests"], row["prompt_tokens"], row["completion_tokens"]) for m, row in by_model.items()
    }
    assert by_model[dep["id"]]["requests"] == 2 and r["totals"]["requests"] == 3
    cost = sql.scalar("SELECT -sum(amount_micros) FROM ledger_entries WHERE tenant_id = $1 AND kind = 'charge'", t.id)
    assert r["totals"]["cost_micros"] == cost

    for group_by in ("day,model", "tenant", "key", "hour,status", "tenant,key,model"):  # every group, as CSV too
        params = {"tenant_id": t.id, "group_by": group_by}
        as_json = admin.get("/admin/usage", params=params).json()["data"]
        answer = admin.get("/admin/usage.csv", params=params)
        assert answer.status_code == 200, (group_by, answer.text)
        as_csv = list(csv.DictReader(io.StringIO(answer.text)))
        assert len(as_csv) == len(as_json) > 0
        for j, c in zip(as_json, as_csv, strict=True):
            assert {k: str(v) for k, v in j.items()} == c
    assert admin.get("/admin/usage", params={"group_by": "planet"}).status_code == 400
    hourly = admin.get("/admin/usage", params={"tenant_id": t.id, "group_by": "hour"}).json()["data"]
    assert sum(h["requests"] for h in hourly) == 3
    deployments = admin.get("/admin/deployments", params={"tenant_id": t.id}).json()["data"]
    assert [d["id"] for d in deployments] == [dep["id"]]


def test_usage_errors_count_streams_that_broke_after_their_200(
    gateway: Any, admin: httpx.Client, make_tenant: Any, sql: Sql
) -> None:
    """A stream cut by the engine or by a dead gateway answered 200 first: it is still a failed request. A client
    that hung up is not."""
    t = make_tenant()
    for status, http_status in (("ok", 200), ("engine_error", 200), ("gateway_lost", 200), ("client_closed", 200),
                                ("rejected", 400), ("engine_error", 502)):  # fmt: skip
        sql.fetch(
            "INSERT INTO usage_records (request_id, tenant_id, api_key_id, model, base_model, endpoint, stream,"
            " prompt_tokens, completion_tokens, status, http_status, started_at, finished_at, latency_ms)"
            " VALUES ($1, $2, $3, 'tiny-base', 'tiny-base', '/v1/chat/completions', true, 1, 1, $4, $5, now(),"
            " now(), 1) RETURNING request_id",
            "req_" + secrets.token_hex(8), t.id, t.key_id, status, http_status,
        )  # fmt: skip
    rows = admin.get("/admin/usage", params={"tenant_id": t.id, "group_by": "status"}).json()
    errors = {r["status"]: r["errors"] for r in rows["data"]}
    assert errors == {"ok": 0, "engine_error": 2, "gateway_lost": 1, "client_closed": 0, "rejected": 1}
    assert rows["totals"] == {**rows["totals"], "requests": 6, "errors": 4}


def test_audit_log_records_admin_and_tenant_actions(
    gateway: Any, admin: httpx.Client, make_tenant: Any, models_dir: Any, sql: Sql
) -> None:
    t = make_tenant()
    admin.patch(f"/admin/tenants/{t.id}", json={"suspended": False})
    files = {n: (n, (models_dir / "adapters" / "lora-1" / n).read_bytes())
             for n in ("adapter_config.json", "adapter_model.safetensors")}  # fmt: skip
    up = httpx.post(f"{gateway.url}/v1/adapters", headers=t.headers, data={"name": "audited"}, files=files)
    assert up.status_code == 201
    httpx.delete(f"{gateway.url}/v1/adapters/{up.json()['id']}", headers=t.headers)
    admin.delete(f"/admin/keys/{t.key_id}")
    log = admin.get("/admin/audit", params={"limit": 1000}).json()["data"]
    actions = {(e["actor"], e["action"], e["target"]) for e in log}
    assert ("admin", "tenant.create", t.id) in actions
    assert ("admin", "key.create", t.key_id) in actions
    assert ("admin", "tenant.update", t.id) in actions
    assert (t.key_id, "adapter.upload", up.json()["id"]) in actions
    assert (t.key_id, "adapter.delete", up.json()["id"]) in actions
    assert ("admin", "key.revoke", t.key_id) in actions
    assert all(e["at"] and "ip" in e for e in log)
    with pytest.raises(Exception, match="immutable"):
        sql.fetch("UPDATE audit_log SET actor = 'someone-else' WHERE target = $1", t.id)


def test_models_and_migrations_agree(database_url: str) -> None:
    from alembic import command

    command.check(alembic_config(database_url))  # raises if a model has no migration


def test_audit_limit_and_price_currency_are_checked(gateway: Any, admin: httpx.Client) -> None:
    for limit in (-1, 0, 1001):
        r = admin.get("/admin/audit", params={"limit": limit})
        assert r.status_code == 400 and set(r.json()["error"]) == {"message", "type", "code", "param"}, r.text
    price = {"model": "currency-probe", "prompt_per_million": 1, "completion_per_million": 1}
    r = admin.post("/admin/prices", json={**price, "currency": "eur"})  # accounts are in usd (BILLING_CURRENCY)
    assert r.status_code == 400 and r.json()["error"]["param"] == "currency", r.text
    r = admin.post("/admin/prices", json=price)
    assert r.status_code == 201 and r.json()["currency"] == "usd", r.text
    assert admin.post("/admin/prices", json={**price, "currency": "USD"}).status_code == 201


def test_adapter_registration_is_confined_to_the_root_and_checked_like_an_upload(
    gateway: Any, admin: httpx.Client, make_tenant: Any, models_dir: Path, tmp_path: Path
) -> None:
    """ADAPTER_REGISTER_ROOT is the conftest's models_dir/adapters: nothing outside it, and no unchecked config."""
    t = make_tenant()
    real = models_dir / "adapters" / "lora-1"
    outside = tmp_path / "copy"
    shutil.copytree(real, outside)

    def register(path: str, name: str = "by-path") -> httpx.Response:
        return admin.post(f"/admin/tenants/{t.id}/adapters", json={"name": name, "path": path})

    inside = models_dir / "adapters" / f"probe-{secrets.token_hex(4)}"
    try:
        inside.mkdir()
        (inside / "escape").symlink_to(outside, target_is_directory=True)
        for path in ("/etc", str(outside), "../../..", str(inside / "escape")):
            r = register(path)
            assert r.status_code == 403, (path, r.text)
            assert r.json()["error"]["code"] == "path_not_allowed" and "ADAPTER_REGISTER_ROOT" in r.text, r.text
        weights = (real / "adapter_model.safetensors").read_bytes()
        (inside / "adapter_model.safetensors").write_bytes(weights)
        for config, word in ((b"{nope", "not valid JSON"), (b'{"peft_type": "LORA", "r": 8, "lora_alpha": "x", '
                             b'"target_modules": ["q_proj"]}', "lora_alpha")):  # fmt: skip
            (inside / "adapter_config.json").write_bytes(config)
            r = register(str(inside))
            assert r.status_code == 422, r.text
            assert word in r.json()["error"]["message"], r.text
        assert register("lora-2", name="relative").status_code == 201  # a relative path is taken under the root
    finally:
        shutil.rmtree(inside, ignore_errors=True)
    assert admin.get(f"/admin/deployments?tenant_id={t.id}").json()["data"][0]["name"] == "relative"
