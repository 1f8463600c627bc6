"""The multi-LoRA benchmark stays runnable: its smoke mode runs against the session's engine and gateway."""

from __future__ import annotations

import json
from pathlib import Path

from bench import multi_lora
from devstack.engine import LocalEngine
from tests.support.processes import GatewayProcess


def test_multi_lora_smoke(
    engine: LocalEngine, gateway: GatewayProcess, admin_token: str, models_dir: Path, tmp_path: Path
) -> None:
    assert engine.proc is not None and gateway.proc is not None
    stack = multi_lora.Stack(
        engine_url=engine.url,
        models_dir=models_dir,
        gateway_url=gateway.url,
        admin_token=admin_token,
        engine_pid=engine.proc.pid,
        gateway_pid=gateway.proc.pid,
    )
    settings = multi_lora.Settings.smoke()
    multi_lora.run(stack, settings, tmp_path)

    results = json.loads((tmp_path / "multi_lora.json").read_text())
    cells = results["cells"]
    assert {(c["path"], c["adapters"]) for c in cells} == {(p, n) for p in ("direct", "gateway") for n in (0, 2)}
    for c in cells:
        assert c["requests"] > 0 and c["tokens_per_s"] > 0 and c["error_rate"] == 0
        assert set(c["total_ms"]) == set(c["ttft_ms"]) == {"p50", "p90", "p99"}
        assert c["loadgen_cpu_s"] > 0 and c["loadgen_cores"] >= 0 and c["other_cores"] >= 0
        assert {"engine", "gateway"} <= set(c["cores"])
        # Every request generated exactly max_tokens, and the engine ran exactly the adapters asked for.
        assert c["engine"]["tokens_per_request"] == settings.max_tokens
        assert c["engine"]["adapters_seen"] == c["adapters"]
    assert len(results["cold"]) == 2 and all(r["cold_total_ms"] > 0 and r["warm_total_ms"] > 0 for r in results["cold"])
    report = (tmp_path / "multi_lora.md").read_text()
    for heading in ("## Headline", "## The gateway's share", "## Cold load", "## Machine, versions, settings"):
        assert heading in report
