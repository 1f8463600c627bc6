"""The OpenAI request contract, defined once: msgspec Structs that check a body at the door and document it
in the OpenAPI schema (gateway.proxy.openapi). Fields not declared here go to the engine unchanged (vLLM's
extensions); rules no type can state (the context length, fields that need each other) are in
gateway.proxy.validation."""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from gateway.errors import InvalidRequest
from gateway.proxy import validation
from gateway.proxy.validation import MAX_LOGPROBS, MAX_MODEL_NAME, MAX_N, MAX_STOP, TOKEN_ID_MAX

Int64 = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]
TokenId = Annotated[int, Meta(ge=0, le=TOKEN_ID_MAX)]
TopLogprobs = Annotated[int, Meta(ge=0, le=MAX_LOGPROBS)]
Penalty = Annotated[float, Meta(ge=-2, le=2)]
ModelName = Annotated[
    str,
    Meta(
        min_length=1, max_length=MAX_MODEL_NAME, pattern="^[^\\x00]*$",  # PostgreSQL text cannot hold a NUL
        description="The base model's name, or your adapter's name or id.",
    ),
]  # fmt: skip
StopString = Annotated[str, Meta(min_length=1)]
LogitBias = dict[Annotated[str, Meta(pattern="^[0-9]{1,10}$")], Annotated[float, Meta(ge=-100, le=100)]]


class ContentPart(Struct):
    """One part of a message: `text` (with `text`), `image_url`, `input_audio`, `file`, `refusal`, or another
    part type the engine accepts; its other fields go to the engine as they are."""

    type: str


Content = str | list[ContentPart]


class FunctionCall(Struct):
    name: str
    arguments: Annotated[str, Meta(description="The arguments as a JSON string.")]


class ToolCall(Struct):
    id: str
    function: FunctionCall
    type: str = "function"


class _Message(Struct, tag_field="role", kw_only=True):
    name: str | UnsetType = UNSET


class SystemMessage(_Message, tag="system"):
    content: Content | UnsetType = UNSET


class DeveloperMessage(_Message, tag="developer"):
    content: Content | UnsetType = UNSET


class UserMessage(_Message, tag="user"):
    content: Content | UnsetType = UNSET


class AssistantMessage(_Message, tag="assistant"):
    content: Annotated[Content | None, Meta(description="May be null when the message has `tool_calls`.")] | (
        UnsetType
    ) = UNSET
    tool_calls: list[ToolCall] | UnsetType | None = UNSET


class ToolMessage(_Message, tag="tool"):
    tool_call_id: str
    content: Content | UnsetType = UNSET


class FunctionMessage(_Message, tag="function"):
    """Deprecated by OpenAI in favour of `tool`."""

    name: str
    content: str | UnsetType | None = UNSET


Message = SystemMessage | DeveloperMessage | UserMessage | AssistantMessage | ToolMessage | FunctionMessage
ROLES = tuple(m.__struct_config__.tag for m in Message.__args__)  # type: ignore[attr-defined]


class StreamOptions(Struct):
    include_usage: bool | None = None
    continuous_usage_stats: bool | None = None


class _Request(Struct, kw_only=True):
    """Parameters both endpoints share; null means the default for each."""

    n: Annotated[int, Meta(ge=1, le=MAX_N)] | None = None
    temperature: Annotated[float, Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, Meta(gt=0, le=1)] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    seed: Int64 | None = None
    stop: StopString | Annotated[list[StopString], Meta(max_length=MAX_STOP)] | None = None
    logit_bias: LogitBias | None = None
    user: str | None = None
    stream: bool | None = None
    stream_options: Annotated[StreamOptions, Meta(description="Only with `stream: true`.")] | None = None
    response_format: dict[str, Any] | None = None
    min_tokens: Annotated[int, Meta(ge=0)] | None = None
    # vLLM's extensions
    repetition_penalty: Annotated[float, Meta(gt=0, le=1e6)] | None = None
    min_p: Annotated[float, Meta(ge=0, le=1)] | None = None
    top_k: Annotated[int, Meta(ge=-1, le=TOKEN_ID_MAX)] | None = None
    stop_token_ids: list[TokenId] | None = None
    allowed_token_ids: list[TokenId] | None = None
    prompt_logprobs: TopLogprobs | None = None
    echo: bool | None = None
    ignore_eos: bool | None = None
    use_beam_search: bool | None = None
    include_stop_str_in_output: bool | None = None
    skip_special_tokens: bool | None = None
    return_token_ids: bool | None = None


class _Chat(_Request, kw_only=True):
    messages: Annotated[list[Message], Meta(min_length=1)]
    max_tokens: Annotated[int, Meta(ge=1, description="At most the engine's context length.")] | None = None
    max_completion_tokens: Annotated[int, Meta(ge=1)] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Meta(ge=0, le=MAX_LOGPROBS, description="Needs `logprobs`.")] | None = None
    add_generation_prompt: bool | None = None
    continue_final_message: bool | None = None
    parallel_tool_calls: bool | None = None


_PROMPT = {
    "oneOf": [
        {"type": "string", "minLength": 1},
        {"type": "array", "items": {"type": "string"}, "minItems": 1},
        {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1},
        {
            "type": "array",
            "items": {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1},
            "minItems": 1,
        },
    ],
    "description": "Text, texts, token ids, or arrays of token ids (counted against the context length here).",
}


class _Completion(_Request, kw_only=True):
    prompt: Annotated[Any, Meta(extra_json_schema=_PROMPT)]  # its shape: gateway.proxy.validation
    max_tokens: Annotated[int, Meta(ge=0, description="At most the engine's context length.")] | None = None
    logprobs: TopLogprobs | None = None
    best_of: Annotated[int, Meta(ge=1, le=MAX_N)] | None = None


class ChatCompletionRequest(_Chat, kw_only=True):
    """OpenAI's chat completion request; other fields the engine accepts are passed through."""

    model: ModelName


class CompletionRequest(_Completion, kw_only=True):
    """OpenAI's completion request; other fields the engine accepts are passed through."""

    model: ModelName


class DeploymentChatRequest(_Chat, kw_only=True):
    """A chat completion request to one deployment (the path names it, so `model` may be left out)."""

    model: ModelName | UnsetType = UNSET


class DeploymentCompletionRequest(_Completion, kw_only=True):
    """A completion request to one deployment (the path names it, so `model` may be left out)."""

    model: ModelName | UnsetType = UNSET


class _Named(Struct):
    """The deployment a path names, checked as a body's `model` would be."""

    model: ModelName


_CONTRACTS: dict[tuple[str, bool], type[_Request]] = {
    ("chat", False): ChatCompletionRequest,
    ("completions", False): CompletionRequest,
    ("chat", True): DeploymentChatRequest,
    ("completions", True): DeploymentCompletionRequest,
}
_decoder = msgspec.json.Decoder()


def parse_body(
    raw: bytes, endpoint: str, default_model: str | None = None, max_model_len: int | None = None
) -> tuple[dict[str, Any], str]:
    """The decoded JSON object (as sent: undeclared fields stay) and its `model`, or InvalidRequest naming the
    parameter. With `max_model_len` (the engine's context length) token counts are bounded too."""
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
    try:
        msgspec.convert(body, _CONTRACTS[endpoint, default_model is not None])
        if default_model is not None and "model" not in body:
            msgspec.convert({"model": default_model}, _Named)
    except msgspec.ValidationError as exc:
        raise _refusal(exc, {**body, "model": body.get("model", default_model)}) from None
    validation.check_request(body, endpoint, raw, max_model_len)
    return body, str(body.get("model", default_model))  # a non-empty string, as the contract says


_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")  # "messages[0].role" -> ("messages", ""), ("", "0"), ("role", "")


def _refusal(error: msgspec.ValidationError, body: dict[str, Any]) -> InvalidRequest:
    """msgspec's 'Expected `int` >= 1 - at `$.n`' as OpenAI says it: a message, a code and the parameter,
    named as OpenAI names it (`messages[0].role`). Read from msgspec's wording: tests/unit/test_validation.py
    and test_request_contract.py pin the parameter and code of each kind of error."""
    detail, _, where = str(error).partition(" - at `")
    path = where.rstrip("`").rpartition("`")[2]  # 'key` in `$.logit_bias' names the object
    param = path.removeprefix("$").removeprefix(".").replace("[...]", "")
    if param != path.removeprefix("$").removeprefix(".") or "` in `" in where:  # a dict's key or value
        which = "key" if "` in `" in where else "value"
        return _invalid(f"Invalid {which} in '{param}': {detail[:1].lower()}{detail[1:]}.", param)
    if detail.startswith("Object missing required field `"):
        field = detail.split("`")[1]
        param = f"{param}.{field}" if param else field
        return InvalidRequest(f"Missing required parameter: '{param}'.", code="missing_required_parameter", param=param)
    if detail.startswith("Invalid value "):  # the tag of a tagged union: a message's role
        choices = ", ".join(f"'{r}'" for r in ROLES)
        return _invalid(f"Invalid value for '{param}': {detail[14:]}. Supported values are: {choices}.", param)
    code = "invalid_type" if ", got `" in detail else "invalid_value"
    if code == "invalid_value" and (value := _value_at(body, param)) is not _MISSING:
        detail = f"{detail}, got {msgspec.json.encode(value).decode()[:100]}"
    return _invalid(f"Invalid '{param}': {detail[:1].lower()}{detail[1:]}.", param or None, code)


def _invalid(message: str, param: str | None, code: str = "invalid_value") -> InvalidRequest:
    return InvalidRequest(message, code=code, param=param)


_MISSING = object()


def _value_at(body: Any, param: str) -> Any:
    value = body
    try:
        for key, index in _STEP.findall(param):
            value = value[int(index)] if index else value[key]
    except (LookupError, TypeError):
        return _MISSING
    return value
