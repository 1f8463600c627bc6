"""A client that hangs up mid-stream is billed what the engine produced, not zero and not the whole answer."""

from __future__ import annotations

import time
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from devstack.engine import LocalEngine
from tests.support.sql import Sql


def engine_generated(engine: LocalEngine) -> float:
    text = httpx.get(f"{engine.url}/metrics").text
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "vllm:generation_tokens_total"
    )


def test_client_disconnect_mid_stream_bills_the_tokens_produced(
    gateway: Any, engine: LocalEngine, make_tenant: Any, sql: Sql
) -> None:
    t = make_tenant()
    before = engine_generated(engine)
    body = {
        "model": "tiny-base",
        "messages": [{"role": "user", "content": "Tell me a story"}],
        "max_tokens": 1000,
        "temperature": 1.0,
        "ignore_eos": True,
        "stream": True,
    }
    received = 0
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", headers=t.headers, json=body, timeout=60) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: ") and '"content"' in line:
                assert '"usage"' not in line  # the running usage we asked for is not shown to this client
                received += 1
                if received == 5:
                    break
    deadline = time.monotonic() + 10
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not rows:
        rows = sql.fetch("SELECT * FROM usage_records WHERE tenant_id = $1", t.id)
        time.sleep(0.2)
    assert len(rows) == 1, rows
    row = rows[0]
    time.sleep(1.5)  # let the engine notice the abort and count what it generated
    produced = engine_generated(engine) - before
    assert row["prompt_tokens"] > 0
    if row["status"] == "ok":
        # The engine finished before the hang-up was noticed (a fast engine): all of it was produced and billed.
        assert row["completion_tokens"] == produced == 1000
    else:
        assert row["status"] == "client_closed"
        assert received - 1 <= row["completion_tokens"] <= produced < 1000, (received, row, produced)
