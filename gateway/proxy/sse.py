"""Reading and rewriting the engine's server-sent events on the hot path: usage blocks, model names, errors."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from gateway.engine.client import parse_event
from gateway.errors import GatewayError
from gateway.http_errors import gateway_error_body

DONE = b"data: [DONE]"
_USAGE = re.compile(rb',"usage":(\{[^{}]*\})')
_INDEX = re.compile(rb'"index":(\d+)')


@dataclass(slots=True)
class Tokens:
    prompt: int = 0
    completion: int = 0


def tokens_of(usage: dict[str, Any]) -> Tokens:
    return Tokens(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))


def take_usage(event: bytes, keep: bool) -> tuple[Tokens | None, bytes]:
    """The usage numbers of an SSE event, and the event with that usage removed unless `keep`."""
    m = _USAGE.search(event)
    if m is not None:
        try:
            usage = json.loads(m.group(1))
        except ValueError:
            return None, event
        return tokens_of(usage), event if keep else event[: m.start()] + event[m.end() :]
    chunk = parse_event(event)  # unusual layout (nested usage details): the slow, general path
    if chunk is None or not isinstance(chunk.get("usage"), dict):
        return None, event
    tokens = tokens_of(chunk["usage"])
    if not keep and chunk.get("choices"):
        del chunk["usage"]
        event = b"data: " + json.dumps(chunk, ensure_ascii=False, separators=(",", ":")).encode()
    return tokens, event


class RunningUsage:
    """A stream's running usage as a whole. vLLM's running usage (continuous_usage_stats) counts one choice,
    and one prompt of a batch: with several choices or prompts, the whole is the sum over them."""

    def __init__(self, body: dict[str, Any]) -> None:
        n = body.get("n")
        self._n = n if isinstance(n, int) and n > 1 else 1
        prompt = body.get("prompt")
        batch = isinstance(prompt, list) and len(prompt) > 1 and not all(isinstance(x, int) for x in prompt)
        self._multi = self._n > 1 or batch
        self._completion: dict[int, int] = {}
        self._prompt: dict[int, int] = {}
        self.total = Tokens()

    def update(self, event: bytes, tokens: Tokens) -> Tokens:
        """Take the running usage of one chunk (`event`, whose usage is `tokens`); the new total."""
        if not self._multi:
            self.total = tokens
            return tokens
        m = _INDEX.search(event)  # the first "index" of a chunk is its choice's (vLLM: prompt × n + choice)
        i = int(m.group(1)) if m else 0
        self._completion[i] = tokens.completion
        self._prompt[i // self._n] = tokens.prompt
        self.total = Tokens(sum(self._prompt.values()), sum(self._completion.values()))
        return self.total


def renamer(engine_model: str, client_model: str) -> Any:
    """Put the client's model name back into each event (the engine echoes its internal name)."""
    if engine_model == client_model:
        return lambda event: event
    old = b'"model":' + json.dumps(engine_model).encode()
    new = b'"model":' + json.dumps(client_model, ensure_ascii=False).encode()
    return lambda event: event.replace(old, new, 1)


def error_event(exc: GatewayError) -> bytes:
    return b"data: " + json.dumps(gateway_error_body(exc)).encode() + b"\n\n"
