"""PostgreSQL goes away under load: the gateway fails closed (503) and loses no served tokens."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest

from devstack.postgres import EmbeddedPostgres
from tests.support.sql import Sql


def test_postgres_restart_during_a_stream(
    gateway: Any, postgres: EmbeddedPostgres | None, make_tenant: Any, sql: Sql
) -> None:
    if postgres is None:
        pytest.skip("needs the embedded PostgreSQL it can stop")
    t = make_tenant()
    body = {
        "model": "tiny-base", "messages": [{"role": "user", "content": "Tell me a story"}],
        "max_tokens": 300, "ignore_eos": True, "stream": True,
        "stream_options": {"include_usage": True},
    }  # fmt: skip
    result: dict[str, Any] = {}

    def stream() -> None:
        with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", headers=t.headers, json=body, timeout=120) as r:
            result["status"] = r.status_code
            result["lines"] = [line for line in r.iter_lines() if line.startswith("data: ")]
            result["request_id"] = r.headers.get("x-request-id")

    worker = threading.Thread(target=stream)
    worker.start()
    time.sleep(0.5)  # the request is admitted and streaming
    postgres.stop()
    try:
        down = httpx.post(
            f"{gateway.url}/v1/chat/completions", headers=t.headers,
            json={"model": "tiny-base", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
        )  # fmt: skip
        assert down.status_code == 503, down.text  # cannot meter, so it does not serve
        assert down.json()["error"]["code"] == "database_unavailable" and down.headers["retry-after"]
        time.sleep(2)
    finally:
        postgres.start()
    worker.join(120)
    assert result["status"] == 200 and result["lines"][-1] == "data: [DONE]"
    row = sql.one("SELECT * FROM usage_records WHERE request_id = $1", result["request_id"])
    assert row["completion_tokens"] == 300 and row["status"] == "ok"
    assert sql.scalar("SELECT count(*) FROM ledger_entries WHERE request_id = $1", result["request_id"]) == 1
    # and the gateway recovered by itself
    ok = httpx.post(
        f"{gateway.url}/v1/chat/completions", headers=t.headers,
        json={"model": "tiny-base", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
    )  # fmt: skip
    assert ok.status_code == 200
