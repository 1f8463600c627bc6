"""The door's checks on OpenAI request bodies (gateway.proxy.validation through parse_body): pure, no engine."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.errors import InvalidRequest
from gateway.proxy.schemas import parse_body

CTX = 1024
MSG = [{"role": "user", "content": "hi"}]


def chat(**kw: Any) -> bytes:
    return json.dumps({"model": "m", "messages": MSG, **kw}).encode()


def comp(**kw: Any) -> bytes:
    return json.dumps({"model": "m", "prompt": "hi", **kw}).encode()


def parse(raw: bytes, endpoint: str) -> dict[str, Any]:
    return parse_body(raw, endpoint, max_model_len=CTX)[0]


GOOD = [
    ("chat", chat()),
    ("chat", chat(max_tokens=1, n=1, temperature=0, top_p=1, seed=-(2**63))),
    ("chat", chat(max_tokens=CTX, max_completion_tokens=CTX, n=128, temperature=2.0, top_p=0.01)),
    ("chat", chat(presence_penalty=-2, frequency_penalty=2, repetition_penalty=1.1, min_p=0, top_k=-1)),
    ("chat", chat(logprobs=True, top_logprobs=20, stop=["a", "b", "c", "d"], seed=2**63 - 1)),
    ("chat", chat(stop="x", logit_bias={"5": -100, "7": 100.0}, user="u", max_tokens=None, temperature=None)),
    ("chat", chat(stream=True, stream_options={"include_usage": True, "continuous_usage_stats": False})),
    ("chat", chat(messages=[{"role": "assistant", "content": None, "tool_calls": []}, {"role": "user"}])),
    ("chat", chat(messages=[{"role": "user", "content": [{"type": "text", "text": "x"}]}])),
    ("chat", chat(some_engine_extra={"x": [1, 2]}, chat_template_kwargs={"a": 1})),
    ("completions", comp()),
    ("completions", comp(max_tokens=0, echo=True, logprobs=20, best_of=2)),
    ("completions", comp(prompt=["a", "b"])),
    ("completions", comp(prompt=[1, 2, 3])),
    ("completions", comp(prompt=[[1, 2], [3]])),
    ("completions", comp(prompt=[0] * CTX)),
    ("completions", comp(prompt="1234567890123456789012345", allowed_token_ids=[0, 5])),
]


@pytest.mark.parametrize(("endpoint", "raw"), GOOD)
def test_good_requests_pass(endpoint: str, raw: bytes) -> None:
    assert parse(raw, endpoint) == json.loads(raw)


BAD = [
    # (endpoint, raw, param)
    ("chat", chat(max_tokens=0), "max_tokens"),
    ("chat", chat(max_tokens=-1), "max_tokens"),
    ("chat", chat(max_tokens=CTX + 1), "max_tokens"),
    ("chat", chat(max_tokens=2**70), "max_tokens"),
    ("chat", chat(max_tokens=1.5), "max_tokens"),
    ("chat", chat(max_tokens="5"), "max_tokens"),
    ("chat", chat(max_tokens=True), "max_tokens"),
    ("chat", chat(max_completion_tokens=0), "max_completion_tokens"),
    ("chat", chat(max_completion_tokens=CTX + 1), "max_completion_tokens"),
    ("chat", chat(min_tokens=-1), "min_tokens"),
    ("chat", chat(n=0), "n"),
    ("chat", chat(n=129), "n"),
    ("chat", chat(n=2.0), "n"),
    ("chat", chat(n=False), "n"),
    ("chat", chat(temperature=-0.1), "temperature"),
    ("chat", chat(temperature=2.01), "temperature"),
    ("chat", chat(temperature="hot"), "temperature"),
    ("chat", chat(temperature=True), "temperature"),
    ("chat", chat(top_p=0), "top_p"),
    ("chat", chat(top_p=1.5), "top_p"),
    ("chat", chat(presence_penalty=2.5), "presence_penalty"),
    ("chat", chat(frequency_penalty=-3), "frequency_penalty"),
    ("chat", chat(frequency_penalty=[1]), "frequency_penalty"),
    ("chat", chat(repetition_penalty=0), "repetition_penalty"),
    ("chat", chat(min_p=1.5), "min_p"),
    ("chat", chat(top_k=-2), "top_k"),
    ("chat", chat(top_k=2**64), "top_k"),
    ("chat", chat(logprobs=1), "logprobs"),
    ("chat", chat(logprobs=True, top_logprobs=21), "top_logprobs"),
    ("chat", chat(logprobs=True, top_logprobs=-1), "top_logprobs"),
    ("chat", chat(top_logprobs=3), "top_logprobs"),
    ("chat", chat(stop=5), "stop"),
    ("chat", chat(stop=[5]), "stop[0]"),
    ("chat", chat(stop=[""]), "stop[0]"),
    ("chat", chat(stop=["a", "b", "c", "d", "e"]), "stop"),
    ("chat", chat(seed=2**63), "seed"),
    ("chat", chat(seed=-(2**63) - 1), "seed"),
    ("chat", chat(seed="x"), "seed"),
    ("chat", chat(seed=1.5), "seed"),
    ("chat", chat(logit_bias={"abc": 1}), "logit_bias"),
    ("chat", chat(logit_bias={"-1": 1}), "logit_bias"),
    ("chat", chat(logit_bias={"5": 101}), "logit_bias"),
    ("chat", chat(logit_bias={"5": "x"}), "logit_bias"),
    ("chat", chat(logit_bias=[1]), "logit_bias"),
    ("chat", chat(user=5), "user"),
    ("chat", chat(stream_options={"include_usage": True}), "stream_options"),
    ("chat", chat(stream=True, stream_options={"include_usage": "yes"}), "stream_options.include_usage"),
    ("chat", chat(stop_token_ids=[-1]), "stop_token_ids[0]"),
    ("chat", chat(allowed_token_ids="1"), "allowed_token_ids"),
    ("chat", chat(response_format="json"), "response_format"),
    ("chat", chat(add_generation_prompt="x"), "add_generation_prompt"),
    ("chat", chat(messages=["hi"]), "messages[0]"),
    ("chat", chat(messages=[{"content": "hi"}]), "messages[0].role"),
    ("chat", chat(messages=[{"role": 1, "content": "hi"}]), "messages[0].role"),
    ("chat", chat(messages=[{"role": "user", "content": 5}]), "messages[0].content"),
    ("chat", chat(messages=[{"role": "user", "content": None}]), "messages[0].content"),
    ("chat", chat(messages=[{"role": "user", "content": ["x"]}]), "messages[0].content[0]"),
    ("chat", chat(foo={"bar": [2**64]}), "foo.bar[0]"),
    ("chat", chat(model="a\x00b"), "model"),
    ("chat", chat(model="x" * 300), "model"),
    ("completions", comp(prompt=""), "prompt"),
    ("completions", comp(prompt=[]), "prompt"),
    ("completions", comp(prompt=[[]]), "prompt"),
    ("completions", comp(prompt=5), "prompt"),
    ("completions", comp(prompt={"a": 1}), "prompt"),
    ("completions", comp(prompt=[-1]), "prompt"),
    ("completions", comp(prompt=[2**40]), "prompt"),
    ("completions", comp(prompt=["a", 1]), "prompt"),
    ("completions", comp(prompt=[0] * (CTX + 1)), "prompt"),
    ("completions", comp(logprobs=True), "logprobs"),
    ("completions", comp(logprobs=21), "logprobs"),
    ("completions", comp(max_tokens=-1), "max_tokens"),
    ("completions", comp(best_of=0), "best_of"),
    ("completions", comp(echo="yes"), "echo"),
    ("completions", comp(prompt_logprobs=21), "prompt_logprobs"),
]


@pytest.mark.parametrize(("endpoint", "raw", "param"), BAD)
def test_bad_requests_name_the_param(endpoint: str, raw: bytes, param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse(raw, endpoint)
    assert info.value.param == param
    assert info.value.status_code == 400
    assert info.value.message


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model": "m", "prompt": "a\xff"}',  # not UTF-8
        b'{"model": "m", "prompt": "a", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",  # nested too deeply
        b'{"model": "m", "prompt": "\\ud800"}',  # a lone surrogate (the engine answers 500 to one in `stop`)
        b'{"model": "m", "prompt": "a", "temperature": 1e400}',  # beyond a double
        b'{"model": "m", "prompt": "a", "temperature": NaN}',
        b'{"model": "m", "prompt": "a",}',
    ],
)
def test_undecodable_bodies_are_400_without_param(raw: bytes) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse(raw, "completions")
    assert info.value.code == "invalid_json" and info.value.param is None


def test_token_prompt_longer_than_the_context_names_both_numbers() -> None:
    with pytest.raises(InvalidRequest) as info:
        parse(comp(prompt=[1] * 2000), "completions")
    assert "1024" in info.value.message and "2000" in info.value.message
    assert info.value.code == "context_length_exceeded"


def test_without_the_context_length_only_the_shape_is_checked() -> None:
    body, _ = parse_body(chat(max_tokens=10**6), "chat")
    assert body["max_tokens"] == 10**6
