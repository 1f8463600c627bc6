"""How engine answers map to our errors (no engine needed)."""

from __future__ import annotations

import json

from gateway.engine.client import EngineModelMissing, map_status, parse_event, stream_error
from gateway.errors import EngineFailed, EngineRejected


def response(status: int, body: object) -> tuple[int, bytes]:
    return status, json.dumps(body).encode()


def test_model_missing_is_recognised() -> None:
    err = map_status(*response(404, {"error": {"message": "The model `mif-x` does not exist.", "code": 404}}))
    assert isinstance(err, EngineModelMissing)


def test_client_errors_pass_through_with_param() -> None:
    err = map_status(*response(400, {"error": {"message": "max_tokens too big", "param": "max_tokens"}}))
    assert isinstance(err, EngineRejected) and err.status_code == 400 and err.param == "max_tokens"


def test_server_errors_hide_details() -> None:
    err = map_status(*response(500, {"error": {"message": "CUDA out of memory at /secret/path"}}))
    assert isinstance(err, EngineFailed) and "secret" not in err.message and err.status_code == 502


def test_engine_schema_errors_are_made_readable() -> None:
    """vLLM words a body that fails its schema as pydantic's dicts, with param `body.<field>`."""
    raw = (
        "1 validation error:\n  {'type': 'list_type', 'loc': 'body.tools', 'msg': 'Input should be a valid list', "
        "'input': 'abc'}"
    )
    err = map_status(*response(400, {"error": {"message": raw, "type": "BadRequestError", "param": "body.tools"}}))
    assert isinstance(err, EngineRejected)
    assert (err.message, err.param) == ("tools: Input should be a valid list", "tools")
    plain = map_status(*response(400, {"error": {"message": "max_tokens is too large", "param": "max_tokens"}}))
    assert (plain.message, plain.param) == ("max_tokens is too large", "max_tokens")


def test_error_events_in_a_stream() -> None:
    """vLLM's error event (its own type and an int code) becomes ours; anything else is not an error."""
    message = "token_id(s) [99999] out of vocab"
    refused = {"error": {"message": message, "type": "BadRequestError", "param": "logit_bias", "code": 400}}
    err = stream_error(b"data: " + json.dumps(refused).encode())
    assert isinstance(err, EngineRejected) and err.status_code == 400 and err.param == "logit_bias"
    assert err.type == "invalid_request_error" and "vocab" in err.message
    crashed = {"error": {"message": "engine dead: CUDA error", "type": "InternalServerError", "code": 500}}
    failed = stream_error(b"data:" + json.dumps(crashed).encode())
    assert isinstance(failed, EngineFailed) and "CUDA" not in failed.message  # details stay in the log
    assert isinstance(stream_error(b'data: {"error": {"message": "no code"}}'), EngineFailed)
    for event in (b"data: [DONE]", b'data: {"id": "x", "choices": []}', b'data: {"error"', b": comment", b""):
        assert stream_error(event) is None


def test_parse_event() -> None:
    assert parse_event(b'data: {"a": 1}') == {"a": 1}
    assert parse_event(b"data: [DONE]") is None
    assert parse_event(b": keep-alive") is None
    assert parse_event(b"data: {broken") is None


def test_running_usage_is_read_and_stripped() -> None:
    import json

    from gateway.proxy.sse import take_usage as _take_usage

    chunk = (
        b'data: {"id":"x","choices":[{"index":0,"delta":{"content":"Hi"}}],'
        b'"usage":{"prompt_tokens":13,"total_tokens":14,"completion_tokens":1,"completion_tokens_details":null}}'
    )
    tokens, stripped = _take_usage(chunk, keep=False)
    assert tokens is not None and (tokens.prompt, tokens.completion) == (13, 1)
    assert json.loads(stripped[6:]) == {"id": "x", "choices": [{"index": 0, "delta": {"content": "Hi"}}]}
    assert _take_usage(chunk, keep=True)[1] == chunk
    nested = b'data: {"usage":{"prompt_tokens":2,"completion_tokens":3,"details":{"a":1}},"choices":[{"index":0}]}'
    tokens, stripped = _take_usage(nested, keep=False)
    assert tokens is not None and (tokens.prompt, tokens.completion) == (2, 3)
    assert "usage" not in json.loads(stripped[6:])


def _chunk(index: int, prompt: int, completion: int) -> bytes:
    return (
        b'data: {"id":"x","choices":[{"index":%d,"delta":{"content":"a"}}],'
        b'"usage":{"prompt_tokens":%d,"total_tokens":0,"completion_tokens":%d}}' % (index, prompt, completion)
    )


def test_running_usage_sums_the_choices_and_prompts() -> None:
    from gateway.proxy.sse import RunningUsage, take_usage

    def feed(running: RunningUsage, *chunks: bytes) -> tuple[int, int]:
        for c in chunks:
            tokens, _ = take_usage(c, keep=False)
            assert tokens is not None
            running.update(c, tokens)
        return running.total.prompt, running.total.completion

    # One choice: the engine's running usage is the whole.
    assert feed(RunningUsage({"messages": []}), _chunk(0, 7, 1), _chunk(0, 7, 2)) == (7, 2)
    # n=3: vLLM counts each choice on its own; one prompt.
    assert feed(RunningUsage({"n": 3}), _chunk(0, 7, 1), _chunk(1, 7, 1), _chunk(2, 7, 1), _chunk(0, 7, 2)) == (7, 4)
    # Two prompts × n=2 (completions): choice index = prompt × n + choice; each prompt counted once.
    running = RunningUsage({"prompt": ["a", "bb"], "n": 2})
    assert feed(running, _chunk(0, 3, 1), _chunk(1, 3, 1), _chunk(2, 5, 1), _chunk(3, 5, 2)) == (8, 5)
    # A prompt of token ids is one prompt, not a batch.
    assert feed(RunningUsage({"prompt": [1, 2, 3]}), _chunk(0, 3, 1), _chunk(0, 3, 2)) == (3, 2)
