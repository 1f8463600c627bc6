"""OpenAI's fine-tuning hyperparameters ("auto" allowed) plus LoRA extensions, resolved to concrete values."""

from __future__ import annotations

import math
from typing import Any

from gateway.errors import InvalidRequest

# The linear layers of Qwen2/Llama-family decoders, where a LoRA may attach (the engine serves these).
TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_OPENAI = ("n_epochs", "batch_size", "learning_rate_multiplier")
_EXTENSIONS = ("lora_rank", "lora_alpha", "lora_target_modules")


def _bad(name: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"Invalid hyperparameter {name}: {why}", code="invalid_hyperparameters", param=name)


def requested(body: dict[str, Any]) -> dict[str, Any]:
    """The hyperparameters of a create request: `method.supervised.hyperparameters` or the older top level."""
    method = body.get("method")
    hyper: Any = body.get("hyperparameters")
    if method is not None:
        if not isinstance(method, dict) or method.get("type", "supervised") != "supervised":
            raise InvalidRequest("Only method.type 'supervised' is supported.", param="method.type")
        supervised = method.get("supervised") or {}
        if not isinstance(supervised, dict):
            raise InvalidRequest("method.supervised must be an object.", param="method.supervised")
        hyper = supervised.get("hyperparameters", hyper)
    hyper = hyper or {}
    if not isinstance(hyper, dict):
        raise InvalidRequest("hyperparameters must be an object.", param="hyperparameters")
    unknown = sorted(set(hyper) - set(_OPENAI) - set(_EXTENSIONS))
    if unknown:
        raise _bad(unknown[0], f"unknown; allowed are {', '.join(_OPENAI + _EXTENSIONS)}")
    return hyper


def _int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _bad(name, f"must be 'auto' or an integer from {low} to {high}; got {value!r}")
    return value


def resolve(hyper: dict[str, Any], examples: int, max_rank: int, max_epochs: int) -> dict[str, Any]:
    """Concrete values; "auto" (or absent) picks a default sized to the data set, as OpenAI does."""
    auto = {k for k in (*_OPENAI, *_EXTENSIONS) if hyper.get(k, "auto") == "auto"}
    out: dict[str, Any] = {}
    # Small data sets get more epochs, up to about 100 example passes.
    out["n_epochs"] = (
        min(max(3, math.ceil(100 / max(examples, 1))), max_epochs)
        if "n_epochs" in auto
        else _int("n_epochs", hyper["n_epochs"], 1, max_epochs)
    )
    out["batch_size"] = (
        max(1, min(32, examples // 50)) if "batch_size" in auto else _int("batch_size", hyper["batch_size"], 1, 256)
    )
    lr = hyper.get("learning_rate_multiplier")
    if "learning_rate_multiplier" in auto:
        out["learning_rate_multiplier"] = 2.0
    elif isinstance(lr, bool) or not isinstance(lr, int | float) or not 0 < lr <= 100:
        raise _bad("learning_rate_multiplier", f"must be 'auto' or a number in (0, 100]; got {lr!r}")
    else:
        out["learning_rate_multiplier"] = float(lr)
    out["lora_rank"] = max_rank if "lora_rank" in auto else _int("lora_rank", hyper["lora_rank"], 1, max_rank)
    out["lora_alpha"] = (
        2 * out["lora_rank"] if "lora_alpha" in auto else _int("lora_alpha", hyper["lora_alpha"], 1, 4096)
    )
    targets = hyper.get("lora_target_modules")
    if "lora_target_modules" in auto:
        out["lora_target_modules"] = list(TARGET_MODULES)
    elif (
        not isinstance(targets, list)
        or not targets
        or not all(isinstance(t, str) and t in TARGET_MODULES for t in targets)
    ):
        raise _bad("lora_target_modules", f"must be 'auto' or a non-empty list of {', '.join(TARGET_MODULES)}")
    else:
        out["lora_target_modules"] = list(dict.fromkeys(targets))
    return out
