"""Prometheus: the scrape parses, token counters equal the usage table, cardinality stays bounded."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.parser import text_string_to_metric_families

from gateway.auth.keys import display_prefix, generate_key, hash_key
from tests.conftest import ARTIFACTS
from tests.support.processes import GatewayProcess
from tests.support.sql import Sql

CHAT = [{"role": "user", "content": "hi"}]


def scrape(metrics_url: str) -> dict[str, list[Any]]:
    r = httpx.get(f"{metrics_url}/metrics")
    # prometheus-client's listener picks the format from Accept; a plain client gets the classic text format.
    assert r.status_code == 200 and r.headers["content-type"] == CONTENT_TYPE_PLAIN_0_0_4  # charset once
    return {f.name: f.samples for f in text_string_to_metric_families(r.text)}


def token_totals(families: dict[str, list[Any]]) -> dict[str, float]:
    out = {"prompt": 0.0, "completion": 0.0}
    for s in families.get("gateway_tokens", []):
        if s.name == "gateway_tokens_total":
            out[s.labels["type"]] += s.value
    return out


def db_totals(sql: Sql) -> dict[str, float]:
    row = sql.one(
        "SELECT coalesce(sum(prompt_tokens), 0) AS p, coalesce(sum(completion_tokens), 0) AS c FROM usage_records"
    )
    return {"prompt": float(row["p"]), "completion": float(row["c"])}


def traffic(url: str, headers: dict[str, str], n: int, stream: bool = False) -> None:
    for i in range(n):
        body = {"model": "tiny-base", "messages": CHAT, "max_tokens": 3 + i % 4, "stream": stream}
        r = httpx.post(f"{url}/v1/chat/completions", headers=headers, json=body, timeout=60)
        assert r.status_code == 200, r.text


def commits(families: dict[str, list[Any]], kind: str) -> tuple[float, float]:
    """(group commits, requests or rows in them) of one kind of metering commit."""
    count = {s.labels["kind"]: s.value for s in families.get("gateway_metering_commit_seconds", [])
             if s.name.endswith("_count")}  # fmt: skip
    items = {s.labels["kind"]: s.value for s in families.get("gateway_metering_commit_batch_size", [])
             if s.name.endswith("_sum")}  # fmt: skip
    return count.get(kind, 0.0), items.get(kind, 0.0)


def test_counters_equal_the_usage_table(gateway: Any, make_tenant: Any, sql: Sql) -> None:
    t = make_tenant()
    before = scrape(gateway.metrics_url)
    before_m, before_db = token_totals(before), db_totals(sql)
    traffic(gateway.url, t.headers, 6)
    traffic(gateway.url, t.headers, 4, stream=True)
    after = scrape(gateway.metrics_url)
    after_m, after_db = token_totals(after), db_totals(sql)
    for kind in ("prompt", "completion"):
        assert after_m[kind] - before_m[kind] == after_db[kind] - before_db[kind] > 0
    # One request at a time: 10 admission commits of one request each; 10 usage rows in at least one commit
    # (with the streams' checkpoints, more commits than rows is possible).
    (a0, ai0), (a1, ai1) = commits(before, "admission"), commits(after, "admission")
    assert (a1 - a0, ai1 - ai0) == (10, 10)
    (u0, ui0), (u1, ui1) = commits(before, "usage"), commits(after, "usage")
    assert u1 - u0 >= 1 and ui1 - ui0 == 10
    names = set(after)
    for expected in ("gateway_http_requests", "gateway_http_request_duration_seconds", "gateway_in_flight_requests",
                     "gateway_time_to_first_token_seconds", "gateway_upstream_duration_seconds", "gateway_engine_up",
                     "gateway_billing_outbox_backlog", "gateway_db_pool_connections_in_use", "gateway_adapter_loads",
                     "gateway_completions"):  # fmt: skip
        assert expected in names, expected
    routes = {s.labels["route"] for s in after["gateway_http_requests"] if s.name.endswith("_total")}
    assert "/v1/chat/completions" in routes
    assert not any(r.startswith("/admin/tenants/tnt_") for r in routes)  # templates, never raw paths


@pytest.fixture(scope="module")
def many_tenants(sql: Sql) -> list[dict[str, str]]:
    """1,000 tenants with a key each, written straight to the database."""
    tenants = []
    for _ in range(1000):
        tid, kid, key = "tnt_m" + secrets.token_hex(6), "key_m" + secrets.token_hex(6), generate_key()
        tenants.append({"id": tid, "key_id": kid, "key": key})
    sql.fetch(
        "INSERT INTO tenants (id, name, created_at) SELECT x, x, now() FROM unnest($1::text[]) AS x",
        [t["id"] for t in tenants],
    )
    sql.fetch(
        "INSERT INTO api_keys (id, tenant_id, name, prefix, key_hash, created_at)"
        " SELECT k, t, 'm', p, h, now() FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS u(k, t, p, h)",
        [t["key_id"] for t in tenants], [t["id"] for t in tenants],
        [display_prefix(t["key"]) for t in tenants], [hash_key(t["key"]) for t in tenants],
    )  # fmt: skip
    return tenants


def series(families: dict[str, list[Any]]) -> int:
    return sum(len(samples) for samples in families.values())


def test_cardinality_is_bounded_with_1000_tenants(gateway: Any, many_tenants: list[dict[str, str]]) -> None:
    traffic(gateway.url, {"Authorization": f"Bearer {many_tenants[0]['key']}"}, 1)
    baseline = series(scrape(gateway.metrics_url))
    for t in many_tenants[1:60]:
        traffic(gateway.url, {"Authorization": f"Bearer {t['key']}"}, 1)
    after = scrape(gateway.metrics_url)
    assert series(after) == baseline  # 59 more tenants, not one more series
    assert not any("tenant" in s.labels for samples in after.values() for s in samples)


@pytest.fixture(scope="module")
def tenant_labelled_gateway(gateway_env: dict[str, str]) -> Iterator[GatewayProcess]:
    gw = GatewayProcess({**gateway_env, "METRICS_TENANT_LABELS": "true"}, ARTIFACTS / "gateway-tenant-labels.log")
    gw.start()
    yield gw
    gw.stop()


def test_per_tenant_labels_only_when_turned_on(tenant_labelled_gateway: GatewayProcess, make_tenant: Any) -> None:
    t = make_tenant()
    traffic(tenant_labelled_gateway.url, t.headers, 1)
    tokens = scrape(tenant_labelled_gateway.metrics_url)["gateway_tokens"]
    assert {s.labels.get("tenant") for s in tokens if s.name == "gateway_tokens_total"} == {t.id}


@pytest.fixture(scope="module")
def two_workers(gateway_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    data = tmp_path_factory.mktemp("multiworker")
    gw = GatewayProcess(
        {**gateway_env, "GATEWAY_WORKERS": "2", "GATEWAY_DATA_DIR": str(data)}, ARTIFACTS / "gateway-2-workers.log"
    )
    gw.start()
    yield gw
    gw.stop()


def test_counters_are_correct_across_two_worker_processes(
    two_workers: GatewayProcess, make_tenant: Any, sql: Sql
) -> None:
    t = make_tenant()
    before_m, before_db = token_totals(scrape(two_workers.metrics_url)), db_totals(sql)
    with httpx.Client(timeout=60) as fresh:  # new connections spread over both workers
        for i in range(12):
            body = {"model": "tiny-base", "messages": CHAT, "max_tokens": 2 + i % 3}
            r = fresh.post(
                f"{two_workers.url}/v1/chat/completions", headers={**t.headers, "Connection": "close"}, json=body
            )
            assert r.status_code == 200
    after_m, after_db = token_totals(scrape(two_workers.metrics_url)), db_totals(sql)
    for kind in ("prompt", "completion"):
        assert after_m[kind] - before_m[kind] == after_db[kind] - before_db[kind] > 0
    pids = {s.labels.get("pid") for samples in scrape(two_workers.metrics_url).values() for s in samples}
    assert pids == {None}  # merged across processes, no per-process series


def test_metrics_are_served_on_their_own_port_only(gateway: Any) -> None:
    """The API's port (the one a proxy makes public) has no /metrics; the listener on METRICS_PORT has."""
    assert httpx.get(f"{gateway.url}/metrics").status_code == 404
    assert "gateway_http_requests" in scrape(gateway.metrics_url)
