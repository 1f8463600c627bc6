"""PNG plot of bench/results/multi_lora.json (needs matplotlib; runs in the bench virtualenv).

.data/bench-venv/bin/python -m bench.plot_multi_lora bench/results/multi_lora.json bench/results
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

COLORS = {"direct": "tab:gray", "gateway": "tab:blue"}


def per_round(cells: list[dict[str, Any]], path: str, get: Any) -> dict[int, list[float]]:
    """adapter count → the per-round ratio of get(cell) to get(base-only cell of that round)."""
    by = {(c["round"], c["adapters"]): c for c in cells if c["path"] == path}
    out: dict[int, list[float]] = {}
    for (rnd, n), c in by.items():
        base = by.get((rnd, 0))
        if n and base:
            out.setdefault(n, []).append(get(c) / get(base))
    return out


def main() -> None:
    results = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    cells, s = results["cells"], results["settings"]
    paths = [p for p in ("direct", "gateway") if any(c["path"] == p for c in cells)]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    panels = (
        (lambda c: c["tokens_per_s"], "tokens/s ÷ base-only tokens/s"),
        (lambda c: c["total_ms"]["p50"], "p50 latency ÷ base-only p50"),
    )
    for ax, (get, ylabel) in zip(axes, panels, strict=True):
        for i, p in enumerate(paths):
            by = per_round(cells, p, get)
            xs = sorted(by)
            meds = [statistics.median(by[x]) for x in xs]
            lo = [m - min(by[x]) for m, x in zip(meds, xs, strict=True)]
            hi = [max(by[x]) - m for m, x in zip(meds, xs, strict=True)]
            shifted = [x * (1 + 0.06 * (i - 0.5)) for x in xs]  # side by side, not on top of each other
            ax.errorbar(shifted, meds, yerr=[lo, hi], fmt="-o", capsize=3, color=COLORS[p], label=p)
        ax.axhline(1.0, color="black", linewidth=0.8, linestyle=":")
        ax.axvline(s["max_cpu_loras"], color="tab:red", linewidth=0.8, linestyle="--", label="--max-cpu-loras")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("adapters the requests rotate over")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"vLLM CPU, tiny model, {s['concurrency']} concurrent, {s['max_tokens']} tokens/request, "
        f"median and min–max over {s['rounds']} interleaved rounds",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(out / "multi_lora.png", dpi=110)


if __name__ == "__main__":
    main()
