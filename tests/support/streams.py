"""Streaming clients for the fault-injection tests: many at once, each remembering what it saw and when."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families


@dataclass
class Seen:
    """What one streaming client received."""

    status: int | None = None
    request_id: str | None = None
    # (time, running completion tokens, running prompt tokens) for each content chunk, as the gateway relayed it
    marks: list[tuple[float, int, int]] = field(default_factory=list)
    error_event: dict[str, Any] | None = None
    done: bool = False
    failure: str | None = None

    def completion_at(self, t: float) -> int:
        """The running completion count the client had seen by time `t` (0 if none)."""
        best = 0
        for when, completion, _ in self.marks:
            if when <= t:
                best = completion
        return best

    @property
    def last(self) -> tuple[int, int]:
        """(completion, prompt) of the last running usage seen."""
        return (self.marks[-1][1], self.marks[-1][2]) if self.marks else (0, 0)


def stream_body(max_tokens: int, prompt: str = "Tell me a long story") -> dict[str, Any]:
    """A streamed chat that cannot stop early, asking for the running usage in every chunk."""
    return {
        "model": "tiny-base",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 1.0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    }


def run_stream(
    url: str, headers: dict[str, str], body: dict[str, Any], seen: Seen, stop_after: int | None = None
) -> None:
    """Stream into `seen`; hang up after `stop_after` content chunks (None: read to the end)."""
    try:
        with httpx.stream("POST", f"{url}/v1/chat/completions", headers=headers, json=body, timeout=180) as r:
            seen.status = r.status_code
            seen.request_id = r.headers.get("x-request-id")
            if r.status_code != 200:
                return
            if stop_after == 0:
                return
            for line in r.iter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    seen.done = True
                    break
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    seen.error_event = chunk["error"]
                    continue
                usage = chunk.get("usage") or {}
                if chunk.get("choices") and usage:
                    seen.marks.append((time.monotonic(), usage["completion_tokens"], usage["prompt_tokens"]))
                    if stop_after is not None and len(seen.marks) >= stop_after:
                        return
    except (httpx.TransportError, json.JSONDecodeError) as exc:
        seen.failure = repr(exc)


def start_streams(n: int, target: Callable[[int, Seen], None]) -> tuple[list[Seen], list[threading.Thread]]:
    seen = [Seen() for _ in range(n)]
    threads = [threading.Thread(target=target, args=(i, seen[i]), daemon=True) for i in range(n)]
    for th in threads:
        th.start()
    return seen, threads


def engine_stats(engine_url: str) -> tuple[float, float]:
    """(generation tokens ever, requests running now) from the engine's own /metrics."""
    text = httpx.get(f"{engine_url}/metrics", timeout=10).text
    generated = running = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "vllm:generation_tokens_total":
                generated += s.value
            elif s.name == "vllm:num_requests_running":
                running += s.value
    return generated, running


def engine_settled(engine_url: str, timeout_s: float = 20.0) -> float:
    """The engine's generation counter once nothing runs and the counter stops moving."""
    deadline = time.monotonic() + timeout_s
    last = -1.0
    while time.monotonic() < deadline:
        generated, running = engine_stats(engine_url)
        if running == 0 and generated == last:
            return generated
        last = generated
        time.sleep(0.5)
    raise TimeoutError("the engine did not go idle")
