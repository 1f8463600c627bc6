"""An OpenAI request body: parsed and checked at the door (the engine validates the rest), and its OpenAPI schema."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, Reference, RequestBody, Schema

from gateway.errors import InvalidRequest
from gateway.proxy.validation import check_model_name, check_request

_decoder = msgspec.json.Decoder()


def parse_body(
    raw: bytes, endpoint: str, default_model: str | None = None, max_model_len: int | None = None
) -> tuple[dict[str, Any], str]:
    """The decoded JSON object and its `model`; InvalidRequest for anything malformed. With `max_model_len`
    (the engine's context length) the parameters are range-checked too (gateway.proxy.validation)."""
    if not raw:
        raise InvalidRequest("The request body is empty; send a JSON object.", code="invalid_json")
    try:
        body = _decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}", code="invalid_json") from exc
    except UnicodeDecodeError as exc:
        raise InvalidRequest("The request body is not valid UTF-8.", code="invalid_json") from exc
    except RecursionError as exc:
        raise InvalidRequest("The request body is nested too deeply.", code="invalid_json") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    model = body.get("model", default_model)
    if model is None and default_model is None:
        raise InvalidRequest("Missing required parameter: 'model'.", code="missing_required_parameter", param="model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' must be a non-empty string.", code="invalid_type", param="model")
    check_model_name(model)
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
    if max_model_len is not None:
        check_request(body, endpoint, raw, max_model_len)
    return body, model


def _props(**kinds: Schema) -> dict[str, Schema | Reference]:
    return dict(kinds)


_STOP = Schema(
    one_of=[Schema(type=OpenAPIType.STRING), Schema(type=OpenAPIType.ARRAY, items=Schema(type=OpenAPIType.STRING))]
)
_SAMPLING = _props(
    model=Schema(type=OpenAPIType.STRING, description="The base model's name, or your adapter's name or id."),
    max_tokens=Schema(type=OpenAPIType.INTEGER, minimum=1, description="At most the engine's context length."),
    n=Schema(type=OpenAPIType.INTEGER, minimum=1, maximum=128),
    temperature=Schema(type=OpenAPIType.NUMBER, minimum=0, maximum=2),
    top_p=Schema(type=OpenAPIType.NUMBER, exclusive_minimum=0, maximum=1),
    presence_penalty=Schema(type=OpenAPIType.NUMBER, minimum=-2, maximum=2),
    frequency_penalty=Schema(type=OpenAPIType.NUMBER, minimum=-2, maximum=2),
    seed=Schema(type=OpenAPIType.INTEGER, minimum=-(2**63), maximum=2**63 - 1),
    stop=_STOP,
    stream=Schema(type=OpenAPIType.BOOLEAN),
    stream_options=Schema(
        type=OpenAPIType.OBJECT,
        properties={"include_usage": Schema(type=OpenAPIType.BOOLEAN)},
        description="Only with `stream: true`.",
    ),
    user=Schema(type=OpenAPIType.STRING),
)
_MESSAGE = Schema(
    type=OpenAPIType.OBJECT,
    required=["role", "content"],
    properties={
        "role": Schema(type=OpenAPIType.STRING, enum=["system", "user", "assistant"]),
        "content": Schema(type=OpenAPIType.STRING),
    },
)
CHAT_REQUEST = Schema(
    type=OpenAPIType.OBJECT,
    required=["model", "messages"],
    properties={
        **_SAMPLING,
        "messages": Schema(type=OpenAPIType.ARRAY, items=_MESSAGE, min_items=1),
        "logprobs": Schema(type=OpenAPIType.BOOLEAN),
        "top_logprobs": Schema(type=OpenAPIType.INTEGER, minimum=0, maximum=20, description="Needs `logprobs`."),
        "max_completion_tokens": Schema(type=OpenAPIType.INTEGER, minimum=1),
    },
    description="OpenAI's chat completion request; other fields the engine accepts are passed through.",
)
COMPLETION_REQUEST = Schema(
    type=OpenAPIType.OBJECT,
    required=["model", "prompt"],
    properties={
        **_SAMPLING,
        "prompt": Schema(
            one_of=[
                Schema(type=OpenAPIType.STRING, min_length=1),
                Schema(type=OpenAPIType.ARRAY, items=Schema(type=OpenAPIType.STRING), min_items=1),
            ]
        ),
        "logprobs": Schema(type=OpenAPIType.INTEGER, minimum=0, maximum=20),
        "echo": Schema(type=OpenAPIType.BOOLEAN),
    },
    description="OpenAI's completion request; other fields the engine accepts are passed through.",
)


def documented_body(schema: Schema) -> type[Operation]:
    """An OpenAPI operation that documents `schema` as its JSON body: the routes read raw bytes (no
    per-request model), so Litestar cannot infer it."""

    @dataclass
    class WithBody(Operation):
        def __post_init__(self) -> None:
            self.request_body = RequestBody(
                content={"application/json": OpenAPIMediaType(schema=schema)}, required=True
            )

    return WithBody
