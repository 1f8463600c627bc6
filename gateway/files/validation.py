"""A fine-tune file is JSON Lines of chat conversations; the first bad line is named with the reason."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROLES = frozenset({"system", "user", "assistant"})
Messages = list[dict[str, str]]


class BadTrainingFile(ValueError):
    """The file is not a valid training set; the message says where and why."""


def _messages(data: Any) -> Messages:
    if not isinstance(data, dict) or not isinstance(data.get("messages"), list) or not data["messages"]:
        raise ValueError('expected an object with a non-empty "messages" list')
    messages: Messages = []
    for i, m in enumerate(data["messages"]):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise ValueError(f"messages[{i}].role must be one of system, user, assistant")
        if not isinstance(m.get("content"), str) or not m["content"]:
            raise ValueError(f"messages[{i}].content must be a non-empty string")
        messages.append({"role": m["role"], "content": m["content"]})
    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError("no assistant message to learn from")
    return messages


def examples(path: Path) -> Iterator[tuple[int, Messages]]:
    """(line number, messages) of each example; blank lines are skipped. Raises BadTrainingFile."""
    with path.open("rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise BadTrainingFile(f"Line {number} is not valid UTF-8.") from None
            if not text.strip():
                continue
            try:
                yield number, _messages(json.loads(text))
            except ValueError as exc:  # json.JSONDecodeError is a ValueError
                raise BadTrainingFile(f"Line {number}: {exc}.") from None


def check_training_file(
    path: Path, count_tokens: Callable[[Messages], int] | None = None, max_tokens: int | None = None
) -> int:
    """The number of examples; BadTrainingFile names the first bad line (format, or longer than the context)."""
    n = 0
    for number, messages in examples(path):
        if count_tokens is not None and max_tokens is not None:
            tokens = count_tokens(messages)
            if tokens > max_tokens:
                raise BadTrainingFile(
                    f"Line {number}: the conversation is {tokens} tokens after the chat template, "
                    f"more than the model's context length of {max_tokens}."
                )
        n += 1
    if n == 0:
        raise BadTrainingFile("The file has no training examples (one JSON object per line).")
    return n
