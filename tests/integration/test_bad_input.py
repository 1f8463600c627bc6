"""Bad input at the door: every case a 4xx in OpenAI's shape, never a 5xx, and the database unchanged.
Plus schemathesis against the gateway's own OpenAPI schema with a tenant key."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.integration.test_errors import assert_openai_error
from tests.support.sql import Sql

# Tables a request could write to; a refused request must leave every one unchanged.
WATCHED = ("usage_records", "ledger_entries", "rate_counters", "audit_log", "open_requests", "billing_accounts")
MSG = [{"role": "user", "content": "hi"}]


def snapshot(sql: Sql) -> dict[str, int]:
    counts = {}
    for table in WATCHED:
        if sql.scalar("SELECT to_regclass($1) IS NOT NULL", f"public.{table}"):
            counts[table] = sql.scalar(f"SELECT count(*) FROM {table}")
    return counts


@pytest.fixture(scope="module")
def tenant(make_tenant: Any) -> Any:
    return make_tenant()


def chat(**kw: Any) -> bytes:
    return json.dumps({"model": "tiny-base", "messages": MSG, "max_tokens": 4, **kw}).encode()


def comp(**kw: Any) -> bytes:
    return json.dumps({"model": "tiny-base", "prompt": "hi", "max_tokens": 4, **kw}).encode()


C, P = "/v1/chat/completions", "/v1/completions"
# (path, body, status, param). Each was tried against the real engine first: most it refuses itself (which would
# still cost an engine call and leave a 'rejected' usage row); the ones marked 500 make it fail outright.
CASES: list[tuple[str, bytes, int, str | None]] = [
    (C, b"", 400, None),
    (C, b"{", 400, None),
    (C, b"null", 400, None),
    (C, b'{"model": "tiny-base", "messages": [{"role": "user", "content": "a\xff"}]}', 400, None),  # not UTF-8
    (P, b'{"model": "tiny-base", "prompt": "a", "x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", 400, None),
    (P, b'{"model": "tiny-base", "prompt": "a", "stop": "\\ud800"}', 400, None),  # engine: 500
    (P, b'{"model": "tiny-base", "prompt": "a", "temperature": 1e999}', 400, None),
    (C, chat(model="tiny\x00base"), 400, "model"),  # PostgreSQL text cannot hold NUL: was a gateway 500
    (C, chat(model="m" * 1000), 400, "model"),
    (C, chat(max_tokens=0), 400, "max_tokens"),
    (C, chat(max_tokens=-5), 400, "max_tokens"),
    (C, chat(max_tokens=100_000), 400, "max_tokens"),
    (C, chat(max_tokens=2**70), 400, "max_tokens"),
    (C, chat(max_tokens=1.5), 400, "max_tokens"),
    (C, chat(max_tokens="5"), 400, "max_tokens"),
    (C, chat(max_completion_tokens=5000), 400, "max_completion_tokens"),
    (C, chat(n=0), 400, "n"),
    (C, chat(n=1000), 400, "n"),
    (C, chat(n="2"), 400, "n"),
    (C, chat(temperature=-1), 400, "temperature"),
    (C, chat(temperature=3), 400, "temperature"),
    (C, chat(temperature="warm"), 400, "temperature"),
    (C, chat(top_p=0), 400, "top_p"),
    (C, chat(top_p=1.01), 400, "top_p"),
    (C, chat(presence_penalty=9), 400, "presence_penalty"),
    (C, chat(frequency_penalty=-9), 400, "frequency_penalty"),
    (C, chat(top_k=2**64), 400, "top_k"),  # engine: 500
    (C, chat(logprobs=True, top_logprobs=21), 400, "top_logprobs"),
    (C, chat(top_logprobs=2), 400, "top_logprobs"),
    (C, chat(logprobs="yes"), 400, "logprobs"),
    (C, chat(stop=7), 400, "stop"),
    (C, chat(stop=[""]), 400, "stop[0]"),
    (C, chat(stop=["a", "b", "c", "d", "e"]), 400, "stop"),
    (C, chat(seed=2**64), 400, "seed"),
    (C, chat(seed="x"), 400, "seed"),
    (C, chat(logit_bias={"x": 1}), 400, "logit_bias"),
    (C, chat(user=5), 400, "user"),
    (C, chat(stream="yes"), 400, "stream"),
    (C, chat(stream_options={"include_usage": True}), 400, "stream_options"),
    (C, chat(stream=True, stream_options={"include_usage": "x"}), 400, "stream_options.include_usage"),
    (C, chat(messages=[]), 400, "messages"),
    (C, chat(messages=["hi"]), 400, "messages[0]"),
    (C, chat(messages=[{"role": "user", "content": 5}]), 400, "messages[0].content"),
    (C, chat(messages=[{"role": "user", "content": None}]), 400, "messages[0].content"),
    (C, chat(extra={"deep": [2**70]}), 400, "extra.deep[0]"),
    (P, comp(prompt=""), 400, "prompt"),
    (P, comp(prompt=[]), 400, "prompt"),
    (P, comp(prompt=[-1]), 400, "prompt"),
    (P, comp(prompt=[[1], []]), 400, "prompt"),
    (P, comp(prompt={"text": "hi"}), 400, "prompt"),
    (P, comp(prompt=[1] * 1500), 400, "prompt"),  # token ids: counted exactly at the door
    (P, comp(logprobs=50), 400, "logprobs"),
    (P, comp(echo="yes"), 400, "echo"),
    (P, comp(best_of=0), 400, "best_of"),
    (P, comp(max_tokens=-1), 400, "max_tokens"),
    (P, json.dumps({"prompt": "hi"}).encode(), 400, "model"),
    (P, json.dumps({"model": "tiny-base"}).encode(), 400, "prompt"),
    (P, json.dumps({"model": "tiny-base", "prompt": "x" * (5 * 1024 * 1024)}).encode(), 413, None),
    ("/maas/deployment/mif-%00x/chat/completions", json.dumps({"messages": MSG}).encode(), 400, "model"),
    ("/maas/deployment/not-a-deployment/completions", json.dumps({"prompt": "x"}).encode(), 404, "model"),
]


def test_the_table_is_big_enough() -> None:
    assert len(CASES) >= 50


@pytest.mark.parametrize(("path", "body", "status", "param"), CASES, ids=[f"{i}" for i in range(len(CASES))])
def test_bad_input_is_refused_at_the_door(
    gateway: Any, tenant: Any, sql: Sql, path: str, body: bytes, status: int, param: str | None
) -> None:
    before = snapshot(sql)
    r = httpx.post(
        f"{gateway.url}{path}", content=body, headers={**tenant.headers, "Content-Type": "application/json"}, timeout=60
    )
    err = assert_openai_error(r, status)
    assert err["param"] == param, err
    assert snapshot(sql) == before


def test_a_text_prompt_beyond_the_context_is_a_400_with_the_numbers(gateway: Any, tenant: Any, sql: Sql) -> None:
    """Text prompts are counted by the engine's tokenizer: its refusal comes back as a 400 with its numbers,
    and bills nothing."""
    r = httpx.post(
        f"{gateway.url}{P}", headers=tenant.headers, json={"model": "tiny-base", "prompt": "hello world " * 3000}
    )
    err = assert_openai_error(r, 400)
    assert "maximum context length is 1024 tokens" in err["message"] and "36000" in err["message"]
    tokens = sql.scalar(
        "SELECT coalesce(sum(prompt_tokens + completion_tokens), 0) FROM usage_records WHERE tenant_id = $1", tenant.id
    )
    assert tokens == 0


def test_good_input_still_works(gateway: Any, tenant: Any) -> None:
    """The door lets through what it should, unknown engine fields included (vLLM ignores those)."""
    body = {"model": "tiny-base", "messages": MSG, "max_tokens": 3, "n": 2, "temperature": 0.5, "seed": -1}
    r = httpx.post(f"{gateway.url}{C}", headers=tenant.headers, json={**body, "top_k": 5, "x_custom": 1})
    assert r.status_code == 200, r.text
    assert len(r.json()["choices"]) == 2
    r = httpx.post(f"{gateway.url}{P}", headers=tenant.headers, json={"model": "tiny-base", "prompt": [1, 2, 3]})
    assert r.status_code == 200, r.text


# --- schemathesis: every tenant operation, generated from the gateway's own OpenAPI schema ---------------------


def test_schemathesis_no_5xx_and_openai_shaped_errors(gateway: Any, tenant: Any) -> None:
    """Each tenant operation of /schema/openapi.json, a bounded number of generated requests each. (The
    schemathesis pytest plugin does not work with pytest 9, so the operations are driven by hand.)"""
    schema = schemathesis.openapi.from_url(f"{gateway.url}/schema/openapi.json").include(path_regex=r"^/(v1|maas)/")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8  # chat, completions, models, adapters, per-deployment routes, billing views
    seen: Counter[int] = Counter()

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=20, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            response = case.call(headers=tenant.headers, timeout=60)
            seen[response.status_code] += 1
            where = f"{case.method} {case.formatted_path}"
            assert response.status_code < 500, f"{where}: {response.status_code} {response.text}"
            if response.status_code >= 400:
                err = response.json()["error"]
                assert set(err) == {"message", "type", "code", "param"}, f"{where}: {response.text}"

        check()
    print(dict(seen))
    assert seen[401] == 0 and seen[200] > 0 and seen[400] > 0, seen  # the key worked; both answers were reached
