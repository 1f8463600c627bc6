"""The data each chart draws, as plain JSON for the page's script: labels for people, numbers per series."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from billing.money import MICROS_PER_MINOR
from gateway.dashboard.format import minor_per_major
from gateway.dashboard.service import Window


def _label(key: str, bucket: str) -> str:
    if bucket == "hour":
        return datetime.strptime(key, "%Y-%m-%dT%H:00Z").strftime("%b %-d %H:00")
    return datetime.strptime(key, "%Y-%m-%d").strftime("%b %-d")


def _major(micros: int, currency: str) -> float:
    """Only for drawing: the page prints exact amounts from the integers, the chart needs a number."""
    return float(Decimal(micros) / MICROS_PER_MINOR / minor_per_major(currency))


def _time(series: dict[str, list[Any]], window: Window, currency: str) -> dict[str, Any]:
    labels = [_label(k, window.bucket) for k in series["labels"]]
    return {
        "tokens": {"labels": labels, "prompt": series["prompt_tokens"], "completion": series["completion_tokens"]},
        "cost": {"labels": labels, "cost": [_major(c, currency) for c in series["cost_micros"]], "currency": currency},
        "requests": {"labels": labels, "ok": [r - e for r, e in zip(series["requests"], series["errors"], strict=True)],
                     "errors": series["errors"]},
    }  # fmt: skip


def overview(data: dict[str, Any], window: Window, currency: str) -> dict[str, Any]:
    return {
        **_time(data["series"], window, currency),
        "tenants": {"labels": [t["name"] for t in data["top_tenants"]],
                    "prompt": [t["prompt_tokens"] for t in data["top_tenants"]],
                    "completion": [t["completion_tokens"] for t in data["top_tenants"]]},
        "models": {"labels": [m["label"] for m in data["top_models"]],
                   "prompt": [m["prompt_tokens"] for m in data["top_models"]],
                   "completion": [m["completion_tokens"] for m in data["top_models"]]},
    }  # fmt: skip


def tenant(data: dict[str, Any], window: Window, currency: str) -> dict[str, Any]:
    return _time(data["series"], window, currency)
