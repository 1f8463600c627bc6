"""How engine answers map to our errors (real httpx.Response objects, no engine needed)."""

from __future__ import annotations

import httpx

from gateway.engine.client import EngineModelMissing, map_status, parse_event
from gateway.errors import EngineFailed, EngineRejected


def response(status: int, body: object) -> httpx.Response:
    return httpx.Response(status, json=body)


def test_model_missing_is_recognised() -> None:
    err = map_status(response(404, {"error": {"message": "The model `mif-x` does not exist.", "code": 404}}))
    assert isinstance(err, EngineModelMissing)


def test_client_errors_pass_through_with_param() -> None:
    err = map_status(response(400, {"error": {"message": "max_tokens too big", "param": "max_tokens"}}))
    assert isinstance(err, EngineRejected) and err.status_code == 400 and err.param == "max_tokens"


def test_server_errors_hide_details() -> None:
    err = map_status(response(500, {"error": {"message": "CUDA out of memory at /secret/path"}}))
    assert isinstance(err, EngineFailed) and "secret" not in err.message and err.status_code == 502


def test_parse_event() -> None:
    assert parse_event(b'data: {"a": 1}') == {"a": 1}
    assert parse_event(b"data: [DONE]") is None
    assert parse_event(b": keep-alive") is None
    assert parse_event(b"data: {broken") is None
