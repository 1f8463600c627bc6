"""The overhead and usage-write benchmarks stay runnable: their smoke modes run here (numbers are not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.processes import ROOT


def _run(module: str, out: Path, timeout: float) -> None:
    subprocess.run([sys.executable, "-m", module, "--smoke", "--out", str(out)], cwd=ROOT, check=True, timeout=timeout)


def test_gateway_overhead_smoke(tmp_path: Path) -> None:
    _run("bench.gateway_overhead", tmp_path, timeout=120)
    results = json.loads((tmp_path / "gateway_overhead.json").read_text())
    cells = results["cells"]
    targets = ("direct", "floor", "gateway")
    assert {(c["target"], c["mode"]) for c in cells} == {(t, m) for t in targets for m in ("json", "stream")}
    for c in cells:
        assert c["requests"] > 0 and c["rps"] > 0
        assert set(c["total_ms"]) == {"p50", "p90", "p99"}
        assert c["cpu_per_1k"] >= 0 and c["loadgen_cpu_s"] >= 0
        if c["mode"] == "stream":
            assert set(c["ttft_ms"]) == {"p50", "p90", "p99"}
    # The open-loop cells: requests paced at the offered rate (a closed loop would send far more to the mock).
    rated = results["rate_cells"]
    assert {(c["target"], c["mode"], c["rate"]) for c in rated} == {
        (t, m, 50.0) for t in targets for m in ("json", "stream")
    }
    for c in rated:
        expected = c["rate"] * results["settings"]["duration_s"]
        assert 0.6 * expected <= c["requests"] <= 1.2 * expected + 1, c
        assert c["peak_in_flight"] >= 1 and c["error_rate"] == 0
    assert len(results["cold_start_s"]["gateway"]) == 1 and results["cold_start_s"]["gateway"][0] > 0
    assert results["peak_rss_mb"]["process"]["gateway"] > 0 and results["peak_rss_mb"]["process"]["floor"] > 0
    report = (tmp_path / "gateway_overhead.md").read_text()
    headings = ("## Goals", "## Non-streaming", "## Streaming", "## At a fixed offered rate", "## Cold start")
    for heading in (*headings, "## Machine, versions, settings"):
        assert heading in report
    assert "| goal | measured (gateway) | met | the floor, same run |" in report


def test_usage_writes_smoke(tmp_path: Path) -> None:
    _run("bench.usage_writes", tmp_path, timeout=120)
    results = json.loads((tmp_path / "usage_writes.json").read_text())["results"]
    assert [r["concurrency"] for r in results] == [16]
    r = results[0]
    assert r["rows"] > 0 and r["rows_per_s"] > 0 and r["batches"] > 0
    assert r["lost"] == 0 and r["duplicates"] == 0  # the no-loss guarantee holds even in a smoke run
    assert "committed rows/s" in (tmp_path / "usage_writes.md").read_text()
