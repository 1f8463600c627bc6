"""The request contract (gateway.proxy.schemas): OpenAI's roles and content forms, undeclared fields passed
through as sent, and the same definition in the OpenAPI schema."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.app import create_app
from gateway.errors import InvalidRequest
from gateway.proxy.schemas import parse_body
from gateway.settings import Settings

ROLES = ["system", "developer", "user", "assistant", "tool", "function"]
CALL = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "x"}'}}
PARTS = [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]


def chat(messages: list[dict[str, Any]], **kw: Any) -> bytes:
    return json.dumps({"model": "m", "messages": messages, **kw}).encode()


def refusal(raw: bytes) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        parse_body(raw, "chat", max_model_len=1024)
    assert info.value.status_code == 400 and info.value.type == "invalid_request_error"
    return info.value


VALID = [
    {"role": "system", "content": "Be brief."},
    {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
    {"role": "developer", "content": "Answer in French."},
    {"role": "user", "content": "hi", "name": "ann"},
    {"role": "user", "content": PARTS},
    {"role": "assistant", "content": "Hello."},
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "assistant", "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "call_1", "content": "42"},
    {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "42"}]},
    {"role": "function", "name": "lookup", "content": "42"},
]


@pytest.mark.parametrize("message", VALID, ids=lambda m: f"{m['role']}-{type(m.get('content')).__name__}")
def test_each_openai_role_and_content_form_is_accepted(message: dict[str, Any]) -> None:
    raw = chat([message])
    body, _ = parse_body(raw, "chat", max_model_len=1024)
    assert body == json.loads(raw)


def test_every_role_is_covered() -> None:
    assert {m["role"] for m in VALID} == set(ROLES)


def test_an_unknown_role_is_refused_naming_the_message() -> None:
    err = refusal(chat([{"role": "user", "content": "hi"}, {"role": "bad", "content": "hi"}]))
    assert err.param == "messages[1].role" and err.code == "invalid_value"
    assert "'bad'" in err.message and all(f"'{role}'" in err.message for role in ROLES)
    assert refusal(chat([{"role": "bad", "content": "hi"}])).param == "messages[0].role"


@pytest.mark.parametrize(
    ("message", "param", "code"),
    [
        ({"role": "tool", "content": "42"}, "messages[0].tool_call_id", "missing_required_parameter"),
        ({"role": "function", "content": "42"}, "messages[0].name", "missing_required_parameter"),
        ({"role": "system", "content": None}, "messages[0].content", "invalid_type"),
        ({"role": "tool", "tool_call_id": "c", "content": None}, "messages[0].content", "invalid_type"),
        ({"role": "user", "content": [{"text": "hi"}]}, "messages[0].content[0].type", "missing_required_parameter"),
        ({"role": "assistant", "content": None, "tool_calls": [{"id": "c"}]}, "messages[0].tool_calls[0].function",
         "missing_required_parameter"),
        ({"role": "assistant", "tool_calls": "x"}, "messages[0].tool_calls", "invalid_type"),
        ({"role": "user", "content": "hi", "name": 5}, "messages[0].name", "invalid_type"),
    ],
)  # fmt: skip
def test_a_message_that_breaks_its_roles_shape_names_the_field(message: dict[str, Any], param: str, code: str) -> None:
    err = refusal(chat([message]))
    assert (err.param, err.code) == (param, code)


def test_undeclared_fields_reach_the_engine_unchanged() -> None:
    """vLLM's extensions, at the top and inside messages, are neither dropped nor rewritten."""
    message = {"role": "assistant", "content": "x", "reasoning_content": "because", "tool_calls": [{**CALL, "k": 1}]}
    extras = {"top_k": 5, "return_token_ids": True, "chat_template_kwargs": {"enable_thinking": False}, "x_new": [1]}
    raw = chat([message, {"role": "user", "content": PARTS}], **extras)
    body, _ = parse_body(raw, "chat", max_model_len=1024)
    assert body == json.loads(raw)


def test_ranges_name_the_value_sent() -> None:
    err = refusal(chat([{"role": "user", "content": "hi"}], n=0))
    assert err.param == "n" and "got 0" in err.message


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    return create_app(Settings()).openapi_schema.to_schema()


def body_schema(openapi: dict[str, Any], path: str) -> dict[str, Any]:
    schema: dict[str, Any] = openapi["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    return schema


def test_the_openapi_schema_documents_the_contract(openapi: dict[str, Any]) -> None:
    chat_body = body_schema(openapi, "/v1/chat/completions")
    messages = chat_body["properties"]["messages"]["items"]["anyOf"]
    by_role = {m["properties"]["role"]["enum"][0]: m for m in messages}
    assert sorted(by_role) == sorted(ROLES)
    assert set(by_role["tool"]["required"]) == {"role", "tool_call_id"}
    assert {"type": "null"} in by_role["assistant"]["properties"]["content"]["anyOf"]
    assert {"type": "integer", "minimum": 1, "maximum": 128} in chat_body["properties"]["n"]["anyOf"]
    assert set(chat_body["required"]) == {"model", "messages"}
    completion = body_schema(openapi, "/v1/completions")
    assert set(completion["required"]) == {"model", "prompt"} and len(completion["properties"]["prompt"]["oneOf"]) == 4
    deployment = body_schema(openapi, "/maas/deployment/{deployment_id}/chat/completions")
    assert deployment["required"] == ["messages"]  # the path names the model
