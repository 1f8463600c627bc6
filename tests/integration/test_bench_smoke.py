"""Benchmarks stay runnable: each runs here in a seconds-long smoke mode (numbers are not asserted)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import deploy_latency


def test_deploy_latency_smoke(gateway: Any, admin_token: str, models_dir: Path) -> None:
    results = deploy_latency.run(gateway.url, admin_token, models_dir / "adapters" / "lora-1", n=2)
    assert all(len(v) == 2 and all(x > 0 for x in v) for v in results.values())
    assert "upload → first token" in deploy_latency.report(results, 2, 1)
