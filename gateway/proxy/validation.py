"""Range and type checks on an OpenAI request at the door: pure functions, no HTTP, no pydantic.

Each rule refuses what the engine would refuse anyway (so a refused call costs no engine time and leaves no
usage row) or what would make the engine fail with a 500 (found by trying: integers beyond 64 bits, e.g.
`top_k` = 2**64). Fields without a rule go to the engine unchanged: vLLM accepts and ignores unknown fields.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from gateway.errors import InvalidRequest

MAX_N = 128  # OpenAI's bound on `n`; vLLM would accept 16384 choices, each reserved against quota
MAX_LOGPROBS = 20  # vLLM's default --max-logprobs, also OpenAI's bound on `top_logprobs`
MAX_STOP = 4  # vLLM's VLLM_MAX_STOP_STRINGS default, also OpenAI's bound
MAX_MODEL_NAME = 256
INT64 = (-(2**63), 2**63 - 1)
TOKEN_ID_MAX = 2**31 - 1
# Only bodies with a run of 19+ digits can hold an integer beyond 64 bits; the rest skip that walk.
_LONG_DIGITS = re.compile(rb"\d{19}")


def _fail(message: str, param: str, code: str = "invalid_value") -> InvalidRequest:
    return InvalidRequest(message, code=code, param=param)


def _is_int(v: Any) -> bool:
    return type(v) is int  # bool is an int subclass, and never a count


def _is_number(v: Any) -> bool:
    return type(v) is float or type(v) is int


def _int(lo: int, hi: int | None = None) -> Callable[[str, Any], None]:
    def check(name: str, v: Any) -> None:
        if not _is_int(v):
            raise _fail(f"'{name}' must be an integer, got {type(v).__name__}.", name, "invalid_type")
        if v < lo or (hi is not None and v > hi):
            bound = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
            raise _fail(f"'{name}' must be {bound}, got {v}.", name)

    return check


def _number(lo: float, hi: float, lo_open: bool = False) -> Callable[[str, Any], None]:
    def check(name: str, v: Any) -> None:
        if not _is_number(v):
            raise _fail(f"'{name}' must be a number, got {type(v).__name__}.", name, "invalid_type")
        if not math.isfinite(v) or v > hi or v < lo or (lo_open and v == lo):
            low = "(" if lo_open else "["
            raise _fail(f"'{name}' must be in {low}{lo:g}, {hi:g}], got {v}.", name)

    return check


def _bool(name: str, v: Any) -> None:
    if type(v) is not bool:
        raise _fail(f"'{name}' must be a boolean, got {type(v).__name__}.", name, "invalid_type")


def _string(name: str, v: Any) -> None:
    if not isinstance(v, str):
        raise _fail(f"'{name}' must be a string, got {type(v).__name__}.", name, "invalid_type")


def _object(name: str, v: Any) -> None:
    if not isinstance(v, dict):
        raise _fail(f"'{name}' must be an object, got {type(v).__name__}.", name, "invalid_type")


def _stop(name: str, v: Any) -> None:
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise _fail(f"'{name}' must be a string or an array of strings.", name, "invalid_type")
    if len(items) > MAX_STOP:
        raise _fail(f"'{name}' may hold at most {MAX_STOP} sequences, got {len(items)}.", name)
    if "" in items:
        raise _fail(f"'{name}' cannot contain an empty string.", name)


def _logit_bias(name: str, v: Any) -> None:
    _object(name, v)
    for key, bias in v.items():
        if not (key.isascii() and key.isdigit() and len(key) < 11 and int(key) <= TOKEN_ID_MAX):
            raise _fail(f"'{name}' keys must be token ids (non-negative integers as strings), got {key!r}.", name)
        if not _is_number(bias) or not -100 <= bias <= 100:
            raise _fail(f"'{name}' values must be numbers between -100 and 100, got {bias!r}.", name)


def _token_ids(name: str, v: Any) -> None:
    if not isinstance(v, list) or not all(_is_int(t) and 0 <= t <= TOKEN_ID_MAX for t in v):
        raise _fail(f"'{name}' must be an array of token ids (non-negative integers).", name, "invalid_type")


_COMMON: dict[str, Callable[[str, Any], None]] = {
    "n": _int(1, MAX_N),
    "temperature": _number(0, 2),
    "top_p": _number(0, 1, lo_open=True),
    "presence_penalty": _number(-2, 2),
    "frequency_penalty": _number(-2, 2),
    "repetition_penalty": _number(0, 1e6, lo_open=True),
    "min_p": _number(0, 1),
    "top_k": _int(-1, TOKEN_ID_MAX),
    "seed": _int(*INT64),
    "stop": _stop,
    "stop_token_ids": _token_ids,
    "allowed_token_ids": _token_ids,
    "logit_bias": _logit_bias,
    "user": _string,
    "echo": _bool,
    "ignore_eos": _bool,
    "use_beam_search": _bool,
    "include_stop_str_in_output": _bool,
    "skip_special_tokens": _bool,
    "return_token_ids": _bool,
    "prompt_logprobs": _int(0, MAX_LOGPROBS),
    "response_format": _object,
}
_CHAT = {
    **_COMMON,
    "logprobs": _bool,
    "top_logprobs": _int(0, MAX_LOGPROBS),
    "add_generation_prompt": _bool,
    "continue_final_message": _bool,
    "parallel_tool_calls": _bool,
}
_COMPLETIONS = {**_COMMON, "logprobs": _int(0, MAX_LOGPROBS), "best_of": _int(1, MAX_N)}


def check_model_name(model: str, param: str = "model") -> None:
    """A name we can look up: bounded, and no NUL (PostgreSQL text cannot hold one)."""
    if len(model) > MAX_MODEL_NAME or "\x00" in model:
        raise _fail(f"'{param}' is not a valid model name.", param)


def check_request(body: dict[str, Any], endpoint: str, raw: bytes, max_model_len: int) -> None:
    """Refuse a chat ('chat') or completions ('completions') body the engine would refuse or fail on.
    `raw` is the body as received (for one cheap scan); `max_model_len` is the engine's context length."""
    rules = _CHAT if endpoint == "chat" else _COMPLETIONS
    for name, value in body.items():
        if value is None:
            continue  # null means "default" for every optional OpenAI field
        rule = rules.get(name)
        if rule is not None:
            rule(name, value)
    for name in ("max_tokens", "max_completion_tokens", "min_tokens"):
        value = body.get(name)
        if value is not None:
            low = 1 if endpoint == "chat" and name != "min_tokens" else 0
            _int(low, max_model_len)(name, value)
    _check_streaming(body)
    if endpoint == "chat":
        _check_messages(body["messages"])
        if body.get("top_logprobs") is not None and body.get("logprobs") is not True:
            raise _fail("'top_logprobs' needs 'logprobs': true.", "top_logprobs")
    else:
        _check_prompt(body["prompt"], max_model_len)
    if _LONG_DIGITS.search(raw) is not None:
        _check_int64(body, "")


def _check_streaming(body: dict[str, Any]) -> None:
    options = body.get("stream_options")
    if options is None:
        return
    if body.get("stream") is not True:
        raise _fail("'stream_options' is only allowed with 'stream': true.", "stream_options")
    for key in ("include_usage", "continuous_usage_stats"):
        if options.get(key) is not None:
            _bool(f"stream_options.{key}", options[key])


def _check_messages(messages: list[Any]) -> None:
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(message, dict):
            raise _fail(f"'{where}' must be an object.", where, "invalid_type")
        if not isinstance(message.get("role"), str):
            raise _fail(f"'{where}.role' must be a string.", f"{where}.role", "invalid_type")
        content = message.get("content")
        if content is None:
            if message["role"] != "assistant" and "content" in message:
                raise _fail(f"'{where}.content' may be null only for an assistant.", f"{where}.content")
        elif isinstance(content, list):
            for j, part in enumerate(content):
                if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                    raise _fail(
                        f"'{where}.content.{j}' must be an object with a 'type'.", f"{where}.content", "invalid_type"
                    )
        elif not isinstance(content, str):
            raise _fail(f"'{where}.content' must be a string or an array of parts.", f"{where}.content", "invalid_type")


def _check_prompt(prompt: Any, max_model_len: int) -> None:
    """A string, an array of strings, an array of token ids, or an array of such arrays; token-id prompts
    are counted exactly, so one longer than the context is refused here with the numbers."""
    if isinstance(prompt, str):
        if not prompt:
            raise _fail("'prompt' must not be empty.", "prompt")
        return
    if not isinstance(prompt, list) or not prompt:
        raise _fail("'prompt' must be a string or a non-empty array.", "prompt", "invalid_type")
    if all(isinstance(p, str) for p in prompt):
        return
    batches = prompt if isinstance(prompt[0], list) else [prompt]
    for ids in batches:
        if not isinstance(ids, list) or not ids:
            raise _fail("'prompt' token arrays must be non-empty.", "prompt", "invalid_type")
        _token_ids("prompt", ids)
        if len(ids) > max_model_len:
            raise _fail(
                f"This model's maximum context length is {max_model_len} tokens. However, your prompt contains "
                f"{len(ids)} tokens. Please reduce the length of the prompt.",
                "prompt",
                "context_length_exceeded",
            )


def _check_int64(value: Any, path: str) -> None:
    """The engine fails (500) on some integers beyond 64 bits; no field needs one."""
    if type(value) is int:
        if not INT64[0] <= value <= INT64[1]:
            raise _fail(f"'{path}' is out of range: integers must fit in 64 bits.", path)
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_int64(v, f"{path}.{k}" if path else k)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_int64(v, f"{path}.{i}")
