"""Every error is OpenAI-shaped JSON with the right status; nothing bad reaches the engine or the usage table."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.sql import Sql


def assert_openai_error(r: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert set(err) == {"message", "type", "code", "param"}
    assert err["message"] and "Traceback" not in err["message"]
    if code is not None:
        assert err["code"] == code
    return dict(err)


@pytest.fixture(scope="module")
def tenant(make_tenant: Any) -> Any:
    return make_tenant()


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_api_key"),
        ({"Authorization": "Bearer sk-not-a-real-key"}, "invalid_api_key"),
        ({"Authorization": "Basic abc"}, "missing_api_key"),
        ({"Authorization": "Bearer"}, "missing_api_key"),
    ],
)
def test_missing_or_bad_key_is_401(gateway: Any, headers: dict[str, str], code: str) -> None:
    r = httpx.post(f"{gateway.url}/v1/chat/completions", headers=headers, json={"model": "tiny-base", "messages": []})
    assert_openai_error(r, 401, code)


def test_bearer_scheme_in_any_case_is_accepted(gateway: Any, admin_token: str, tenant: Any) -> None:
    body = {"model": "tiny-base", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    r = httpx.post(f"{gateway.url}/v1/chat/completions", headers={"Authorization": f"bearer {tenant.key}"}, json=body)
    assert r.status_code == 200, r.text
    r = httpx.get(f"{gateway.url}/admin/tenants", headers={"Authorization": f"BEARER {admin_token}"})
    assert r.status_code == 200, r.text


def test_admin_token_is_not_a_tenant_key_and_back(gateway: Any, admin_token: str, tenant: Any) -> None:
    r = httpx.get(f"{gateway.url}/v1/models", headers={"Authorization": f"Bearer {admin_token}"})
    assert_openai_error(r, 401)
    r = httpx.post(f"{gateway.url}/admin/tenants", headers=tenant.headers, json={"name": "x"})
    assert_openai_error(r, 401)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"", None),
        (b"{not json", None),
        (b"[1, 2]", None),
        (b'{"messages": [{"role": "user", "content": "hi"}]}', "model"),
        (b'{"model": 5, "messages": [{"role": "user", "content": "hi"}]}', "model"),
        (b'{"model": "tiny-base"}', "messages"),
        (b'{"model": "tiny-base", "messages": []}', "messages"),
        (b'{"model": "tiny-base", "messages": "hi"}', "messages"),
        (
            b'{"model": "tiny-base", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}',
            "stream",
        ),
    ],
)
def test_malformed_chat_body_is_400(gateway: Any, tenant: Any, sql: Sql, body: bytes, param: str | None) -> None:
    before = sql.scalar("SELECT count(*) FROM usage_records")
    r = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        headers={**tenant.headers, "Content-Type": "application/json"},
        content=body,
    )
    err = assert_openai_error(r, 400)
    assert err["param"] == param
    assert sql.scalar("SELECT count(*) FROM usage_records") == before


def test_engine_refusal_is_passed_on_as_a_400(gateway: Any, tenant: Any) -> None:
    r = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        headers=tenant.headers,
        json={"model": "tiny-base", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000},
    )
    err = assert_openai_error(r, 400)
    assert err["param"] == "max_tokens"


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "hi"}], "logit_bias": {"99999": 1}},
            "logit_bias",
        ),
        ("/v1/completions", {"prompt": [99999]}, None),
    ],
    ids=["chat-logit-bias", "completion-token-ids"],
)
def test_engine_refusal_of_a_stream_is_a_400_too(
    gateway: Any, tenant: Any, sql: Sql, path: str, body: dict[str, Any], param: str | None
) -> None:
    """vLLM answers these streams 200 and refuses them in the first event: the client gets the same 400 as
    without streaming, not a 200 with the engine's own error event; the row says so."""
    r = httpx.post(
        f"{gateway.url}{path}",
        headers=tenant.headers,
        json={"model": "tiny-base", "max_tokens": 5, "stream": True, **body},
    )
    err = assert_openai_error(r, 400)
    assert err["type"] == "invalid_request_error" and "vocab" in err["message"], err
    if param:
        assert err["param"] == param
    row = sql.one(
        "SELECT status, http_status, completion_tokens FROM usage_records WHERE tenant_id = $1"
        " ORDER BY finished_at DESC LIMIT 1",
        tenant.id,
    )
    assert row == {"status": "rejected", "http_status": 400, "completion_tokens": 0}


def test_engine_schema_error_names_the_field(gateway: Any, tenant: Any) -> None:
    """A field the gateway passes on unchecked and the engine's schema refuses: its words, not pydantic's dicts."""
    body = {"model": "tiny-base", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "tools": "abc"}
    err = assert_openai_error(httpx.post(f"{gateway.url}/v1/chat/completions", headers=tenant.headers, json=body), 400)
    assert err["param"] == "tools" and err["message"].startswith("tools: "), err
    assert "{" not in err["message"], err


def test_unknown_route_and_method_are_openai_shaped(gateway: Any, tenant: Any) -> None:
    assert_openai_error(httpx.get(f"{gateway.url}/v1/nothing-here", headers=tenant.headers), 404)
    assert_openai_error(httpx.get(f"{gateway.url}/v1/chat/completions", headers=tenant.headers), 405)


def test_admin_rejects_bad_bodies_and_tokens(gateway: Any, admin: httpx.Client) -> None:
    assert_openai_error(admin.post("/admin/tenants", json={"nam": "x"}), 400)
    assert_openai_error(admin.post("/admin/tenants", json={"name": ""}), 400)
    assert_openai_error(admin.post("/admin/tenants/tnt_nope/keys", json={"name": "x"}), 404)
    assert_openai_error(httpx.post(f"{gateway.url}/admin/tenants", json={"name": "x"}), 401)
    r = httpx.post(f"{gateway.url}/admin/tenants", json={"name": "x"}, headers={"Authorization": "Bearer wrong"})
    assert_openai_error(r, 401)
    name = "dup-tenant"
    assert admin.post("/admin/tenants", json={"name": name}).status_code == 201
    assert_openai_error(admin.post("/admin/tenants", json={"name": name}), 409)


def test_health_and_readiness(gateway: Any) -> None:
    assert httpx.get(f"{gateway.url}/healthz").json() == {"status": "ok"}
    r = httpx.get(f"{gateway.url}/readyz")
    assert r.status_code == 200
    assert r.json()["checks"] == {"database": "ok", "engine": "ok"}
