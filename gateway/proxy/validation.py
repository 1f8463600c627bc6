"""The door's rules that no type in gateway.proxy.schemas can state: pure functions, no HTTP.

Each refuses what the engine would refuse anyway (so a refused call costs no engine time and leaves no usage
row) or what would make the engine fail with a 500 (found by trying: integers beyond 64 bits, e.g. `top_k` =
2**64). Parameters are named as OpenAI names them: `messages[0].content`, `stream_options.include_usage`.
"""

from __future__ import annotations

from typing import Any

from gateway.errors import InvalidRequest

MAX_N = 128  # OpenAI's bound on `n`; vLLM would accept 16384 choices, each reserved against quota
MAX_LOGPROBS = 20  # vLLM's default --max-logprobs, also OpenAI's bound on `top_logprobs`
MAX_STOP = 4  # vLLM's VLLM_MAX_STOP_STRINGS default, also OpenAI's bound
MAX_MODEL_NAME = 256
INT64 = (-(2**63), 2**63 - 1)
TOKEN_ID_MAX = 2**31 - 1
# Only bodies with a run of 19+ digits can hold an integer beyond 64 bits; the rest skip that walk. Found by
# mapping every digit to "9" and anything else to " " (bytes.translate): ten times faster than a regex search.
_DIGIT_RUNS = bytes(0x39 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_RUN = b"9" * 19
_TOKEN_COUNTS = ("max_tokens", "max_completion_tokens", "min_tokens")


def _fail(message: str, param: str, code: str = "invalid_value") -> InvalidRequest:
    return InvalidRequest(message, code=code, param=param)


def check_request(body: dict[str, Any], endpoint: str, raw: bytes, max_model_len: int | None) -> None:
    """Refuse a chat ('chat') or completions ('completions') body that passed its type (schemas) but that the
    engine would refuse or fail on. `raw` is the body as received (for one cheap scan); `max_model_len` is the
    engine's context length, None when not known yet."""
    if max_model_len is not None:
        for name in _TOKEN_COUNTS:
            value = body.get(name)
            if value is not None and value > max_model_len:
                low = 1 if endpoint == "chat" and name != "min_tokens" else 0
                raise _fail(f"'{name}' must be between {low} and {max_model_len}, got {value}.", name)
    if body.get("stream_options") is not None and body.get("stream") is not True:
        raise _fail("'stream_options' is only allowed with 'stream': true.", "stream_options")
    if endpoint == "chat":
        if body.get("top_logprobs") is not None and body.get("logprobs") is not True:
            raise _fail("'top_logprobs' needs 'logprobs': true.", "top_logprobs")
    else:
        _check_prompt(body["prompt"], max_model_len)
    bias = body.get("logit_bias")
    if bias and any(int(key) > TOKEN_ID_MAX for key in bias):
        raise _fail(f"'logit_bias' keys must be token ids, at most {TOKEN_ID_MAX}.", "logit_bias")
    if _LONG_RUN in raw.translate(_DIGIT_RUNS):
        _check_int64(body, "")


def _token_ids(ids: Any) -> bool:
    return isinstance(ids, list) and all(type(t) is int and 0 <= t <= TOKEN_ID_MAX for t in ids)


def _check_prompt(prompt: Any, max_model_len: int | None) -> None:
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
        if not _token_ids(ids):
            raise _fail("'prompt' must be an array of token ids (non-negative integers).", "prompt", "invalid_type")
        if max_model_len is not None and len(ids) > max_model_len:
            raise _fail(
                f"This model's maximum context length is {max_model_len} tokens. However, your prompt contains "
                f"{len(ids)} tokens. Please reduce the length of the prompt.",
                "prompt",
                "context_length_exceeded",
            )


def _check_int64(value: Any, path: str) -> None:
    """The engine fails (500) on some integers beyond 64 bits, in fields it knows or not; no field needs one."""
    if type(value) is int:
        if not INT64[0] <= value <= INT64[1]:
            raise _fail(f"'{path}' is out of range: integers must fit in 64 bits.", path)
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_int64(v, f"{path}.{k}" if path else k)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_int64(v, f"{path}[{i}]")
