"""Checks on an OpenAI request body at the door; the engine validates the rest."""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.errors import InvalidRequest

_decoder = msgspec.json.Decoder()


def parse_body(raw: bytes, endpoint: str, default_model: str | None = None) -> tuple[dict[str, Any], str]:
    """The decoded JSON object and its `model`; InvalidRequest for anything malformed."""
    if not raw:
        raise InvalidRequest("The request body is empty; send a JSON object.", code="invalid_json")
    try:
        body = _decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}", code="invalid_json") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    model = body.get("model", default_model)
    if model is None and default_model is None:
        raise InvalidRequest("Missing required parameter: 'model'.", code="missing_required_parameter", param="model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' must be a non-empty string.", code="invalid_type", param="model")
    if endpoint == "chat":
        messages = body.get("messages")
        if messages is None:
            raise InvalidRequest(
                "Missing required parameter: 'messages'.", code="missing_required_parameter", param="messages"
            )
        if not isinstance(messages, list) or not messages:
            raise InvalidRequest("'messages' must be a non-empty array.", code="invalid_type", param="messages")
    elif "prompt" not in body:
        raise InvalidRequest("Missing required parameter: 'prompt'.", code="missing_required_parameter", param="prompt")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean.", code="invalid_type", param="stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidRequest("'stream_options' must be an object.", code="invalid_type", param="stream_options")
    return body, model
