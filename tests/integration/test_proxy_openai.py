"""The official openai SDK against the real gateway, engine and database: answers and exact usage rows."""

from __future__ import annotations

from typing import Any

import pytest
from openai import BadRequestError, NotFoundError, OpenAI

from tests.conftest import TenantHandle
from tests.support.sql import Sql

CHAT = [{"role": "user", "content": "Who are you?"}]


@pytest.fixture(scope="module")
def tenant(make_tenant: Any, register_adapter: Any) -> TenantHandle:
    t = make_tenant()
    register_adapter(t.id, "helper", 1)
    return t


@pytest.fixture(scope="module")
def client(gateway: Any, tenant: TenantHandle) -> OpenAI:
    return OpenAI(base_url=f"{gateway.url}/v1", api_key=tenant.key, max_retries=0)


def usage_row(sql: Sql, request_id: str) -> dict[str, Any]:
    return sql.one("SELECT * FROM usage_records WHERE request_id = $1", request_id)


def test_base_and_adapter_answer_differently_and_usage_matches_the_row(
    client: OpenAI, sql: Sql, tenant: TenantHandle
) -> None:
    answers = {}
    for model in ("tiny-base", "helper"):
        raw = client.chat.completions.with_raw_response.create(model=model, messages=CHAT, max_tokens=16, temperature=0)
        completion = raw.parse()
        assert completion.model == model
        answers[model] = completion.choices[0].message.content
        row = usage_row(sql, raw.headers["x-request-id"])
        assert completion.usage is not None
        assert (row["prompt_tokens"], row["completion_tokens"]) == (
            completion.usage.prompt_tokens,
            completion.usage.completion_tokens,
        )
        assert row["completion_tokens"] > 0
        assert row["tenant_id"] == tenant.id and row["api_key_id"] == tenant.key_id
        assert row["model"] == model and row["status"] == "ok" and row["stream"] is False
        assert (row["adapter_id"] is None) == (model == "tiny-base")
    assert answers["tiny-base"] != answers["helper"]


def test_stream_with_usage_requested_gets_the_usage_chunk_equal_to_the_row(client: OpenAI, sql: Sql) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="helper",
        messages=CHAT,
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(raw.parse())
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1 and usage_chunks[0].choices == []
    assert all(c.model == "helper" for c in chunks)
    row = usage_row(sql, raw.headers["x-request-id"])
    usage = usage_chunks[0].usage
    assert (row["prompt_tokens"], row["completion_tokens"]) == (usage.prompt_tokens, usage.completion_tokens)
    assert row["stream"] is True and row["status"] == "ok"


def test_stream_without_usage_hides_the_chunk_but_still_meters(client: OpenAI, sql: Sql) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="helper", messages=CHAT, max_tokens=12, temperature=0, stream=True
    )
    chunks = list(raw.parse())
    assert chunks, "the stream was empty"
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks), "a choice-less (usage) chunk leaked to the client"
    row = usage_row(sql, raw.headers["x-request-id"])
    assert row["completion_tokens"] == 12 and row["prompt_tokens"] > 0


def test_stream_content_equals_non_stream_content(client: OpenAI) -> None:
    full = client.chat.completions.create(model="helper", messages=CHAT, max_tokens=10, temperature=0)
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model="helper", messages=CHAT, max_tokens=10, temperature=0, stream=True
        )
    )
    assert streamed == full.choices[0].message.content


def test_text_completions_non_streaming_and_streaming(client: OpenAI, sql: Sql) -> None:
    raw = client.completions.with_raw_response.create(model="helper", prompt="Hello", max_tokens=8, temperature=0)
    completion = raw.parse()
    assert completion.model == "helper" and completion.usage is not None
    row = usage_row(sql, raw.headers["x-request-id"])
    assert row["endpoint"] == "/v1/completions"
    assert row["completion_tokens"] == completion.usage.completion_tokens == 8

    raw = client.completions.with_raw_response.create(
        model="tiny-base", prompt="Hello", max_tokens=5, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(raw.parse())
    usage = [c.usage for c in chunks if c.usage is not None]
    assert len(usage) == 1
    assert usage_row(sql, raw.headers["x-request-id"])["completion_tokens"] == usage[0].completion_tokens


def test_models_lists_base_and_own_adapters(client: OpenAI) -> None:
    ids = {m.id for m in client.models.list().data}
    assert ids == {"tiny-base", "helper"}


def test_models_retrieve_one_by_name_or_deployment_id(
    client: OpenAI, gateway: Any, make_tenant: Any, tenant: TenantHandle, sql: Sql
) -> None:
    assert client.models.retrieve("tiny-base").owned_by == "system"
    helper = client.models.retrieve("helper")
    assert helper.owned_by == tenant.id
    deployment = sql.scalar("SELECT id FROM adapters WHERE tenant_id = $1 AND name = 'helper'", tenant.id)
    assert client.models.retrieve(deployment).id == "helper"
    with pytest.raises(NotFoundError) as missing:
        client.models.retrieve("no-such-model")
    assert missing.value.body["code"] == "model_not_found"  # type: ignore[index]
    stranger = OpenAI(base_url=f"{gateway.url}/v1", api_key=make_tenant().key, max_retries=0)
    with pytest.raises(NotFoundError):  # another tenant's adapter, by name or id: as if it did not exist
        stranger.models.retrieve(deployment)


def test_adapter_can_be_called_by_deployment_id(client: OpenAI, admin: Any, tenant: TenantHandle, sql: Sql) -> None:
    deployment = sql.scalar("SELECT id FROM adapters WHERE tenant_id = $1 AND name = 'helper'", tenant.id)
    by_id = client.chat.completions.create(model=deployment, messages=CHAT, max_tokens=8, temperature=0)
    by_name = client.chat.completions.create(model="helper", messages=CHAT, max_tokens=8, temperature=0)
    assert by_id.model == deployment
    assert by_id.choices[0].message.content == by_name.choices[0].message.content


CALL = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "capital"}'}}
# OpenAI's six roles, each in a conversation the engine can render.
ROLE_CASES: dict[str, Any] = {
    "system": [{"role": "system", "content": "Be brief."}, *CHAT],
    "developer": [{"role": "developer", "content": "Be brief."}, *CHAT],
    "user": [{"role": "user", "content": [{"type": "text", "text": "Who are you?"}]}],
    "assistant": [*CHAT, {"role": "assistant", "content": "A model."}, *CHAT],
    "tool": [*CHAT, {"role": "assistant", "content": None, "tool_calls": [CALL]},
             {"role": "tool", "tool_call_id": "call_1", "content": "Paris"}],
    "function": [*CHAT, {"role": "function", "name": "lookup", "content": "Paris"}],
}  # fmt: skip


@pytest.mark.parametrize("role", list(ROLE_CASES))
def test_each_openai_role_is_answered_and_metered(client: OpenAI, sql: Sql, role: str) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="tiny-base",
        messages=ROLE_CASES[role],
        max_tokens=2,
        temperature=0,
    )
    assert raw.parse().choices
    assert usage_row(sql, raw.headers["x-request-id"])["status"] == "ok"


def test_an_unknown_role_is_a_400_and_bills_nothing(client: OpenAI, sql: Sql, tenant: TenantHandle) -> None:
    """OpenAI refuses it; the engine would answer it (and we would bill it), so the door refuses it."""
    before = sql.scalar("SELECT count(*) FROM usage_records WHERE tenant_id = $1", tenant.id)
    messages: Any = [{"role": "bad", "content": "Who are you?"}]
    with pytest.raises(BadRequestError) as refused:
        client.chat.completions.create(model="tiny-base", messages=messages, max_tokens=2)
    assert refused.value.status_code == 400
    error = refused.value.body
    assert isinstance(error, dict)
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_value"
    assert error["param"] == "messages[0].role"
    assert sql.scalar("SELECT count(*) FROM usage_records WHERE tenant_id = $1", tenant.id) == before
