"""Tokens as training sees and bills them: the conversation rendered by the base model's chat template."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from gateway.files.validation import Messages, examples


@lru_cache(maxsize=4)
def tokenizer(model_dir: str) -> Any:
    """The base model's tokenizer (transformers is imported on first use only)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def conversation_tokens(tok: Any, messages: Messages) -> int:
    """Tokens of one example: the whole conversation through the chat template, no special tokens added."""
    text = tok.apply_chat_template(messages, tokenize=False)
    return len(tok(text, add_special_tokens=False)["input_ids"])


def file_tokens(tok: Any, path: Path) -> int:
    """Tokens of one pass over a training file (trained tokens = this × epochs)."""
    return sum(conversation_tokens(tok, messages) for _, messages in examples(path))
