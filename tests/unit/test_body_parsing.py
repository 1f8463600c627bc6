from __future__ import annotations

import pytest

from gateway.errors import InvalidRequest
from gateway.proxy.schemas import parse_body


def test_good_bodies() -> None:
    body, model = parse_body(b'{"model": "m", "messages": [{"role": "user", "content": "x"}]}', "chat")
    assert model == "m" and body["messages"]
    _, model = parse_body(b'{"messages": [{"role": "user", "content": "x"}]}', "chat", default_model="mif-a")
    assert model == "mif-a"
    _, model = parse_body(b'{"model": "m", "prompt": "x"}', "completions")
    assert model == "m"


@pytest.mark.parametrize(
    ("raw", "endpoint"),
    [
        (b"", "chat"),
        (b"nope", "chat"),
        (b"1", "chat"),
        (b'{"model": "m"}', "chat"),
        (b'{"model": "", "messages": [1]}', "chat"),
        (b'{"model": "m", "n": 1}', "completions"),
    ],
)
def test_bad_bodies(raw: bytes, endpoint: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_body(raw, endpoint)


def test_the_deployment_a_path_names_is_checked_like_a_model() -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_body(b'{"messages": [{"role": "user", "content": "x"}]}', "chat", default_model="mif-\x00x")
    assert info.value.param == "model"
