"""PNG plots of bench/results/gateway_overhead.json (needs matplotlib; runs in the bench virtualenv).

.data/bench-venv/bin/python -m bench.plot_overhead bench/results/gateway_overhead.json bench/results
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

COLORS = {"direct": "tab:gray", "floor": "tab:green", "gateway": "tab:blue", "litellm": "tab:red"}


def _series(cells: list[dict[str, Any]], mode: str, target: str, get: Any) -> tuple[list[int], list[float]]:
    by: dict[int, list[float]] = {}
    for c in cells:
        if c["mode"] == mode and c["target"] == target:
            by.setdefault(c["concurrency"], []).append(get(c))
    xs = sorted(by)
    return xs, [statistics.median(by[x]) for x in xs]


def main() -> None:
    results = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    cells = results["cells"]
    targets = [t for t in ("direct", "floor", "gateway", "litellm") if any(c["target"] == t for c in cells)]
    s = results["settings"]
    note = f"mock {s['mock_latency_ms']} ms, {s['workers']} worker(s), {s['duration_s']} s × {s['rounds']} rounds"

    # Added latency (target − direct), p50 and p99, JSON and stream TTFT.
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, (mode, series, title) in zip(
        axes,
        (("json", "total_ms", "non-streaming: added latency"), ("stream", "ttft_ms", "streaming: added TTFT")),
        strict=True,
    ):
        for t in targets:
            if t == "direct":
                continue
            for q, style in (("p50", "-o"), ("p99", "--s")):
                xs, ys = _series(cells, mode, t, lambda c, q=q, series=series: c[series][q])
                _, ds = _series(cells, mode, "direct", lambda c, q=q, series=series: c[series][q])
                if xs and len(ds) == len(ys):
                    ax.plot(xs, [y - d for y, d in zip(ys, ds, strict=True)], style, color=COLORS[t], label=f"{t} {q}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("symlog", linthresh=1)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel("ms added over direct")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(note, fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "gateway_overhead_latency.png", dpi=110)

    for name, get, ylabel in (
        ("throughput", lambda c: c["rps"], "requests/s (closed loop)"),
        ("cpu", lambda c: c["cpu_per_1k"], "CPU seconds per 1,000 requests"),
    ):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for ax, mode in zip(axes, ("json", "stream"), strict=True):
            for t in targets:
                xs, ys = _series(cells, mode, t, get)
                ax.plot(xs, ys, "-o", color=COLORS[t], label=t)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("concurrent clients")
            ax.set_ylabel(ylabel)
            ax.set_title("non-streaming" if mode == "json" else "streaming")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(note, fontsize=9)
        fig.tight_layout()
        fig.savefig(out / f"gateway_overhead_{name}.png", dpi=110)

    _open_loop(results.get("rate_cells", []), targets, note, out)


def _open_loop(cells: list[dict[str, Any]], targets: list[str], note: str, out: Path) -> None:
    """Added latency at each fixed offered rate (no queue of its own making): grouped bars, p50 / p90 / p99."""
    if not cells:
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, (mode, series, title) in zip(
        axes,
        (("json", "total_ms", "non-streaming: added latency"), ("stream", "ttft_ms", "streaming: added TTFT")),
        strict=True,
    ):
        rates = sorted({c["rate"] for c in cells if c["mode"] == mode})
        shown = [t for t in targets if t != "direct"]
        width = 0.8 / (len(shown) * 3)
        for i, t in enumerate(shown):
            for j, q in enumerate(("p50", "p90", "p99")):
                added = []
                for rate in rates:
                    key = (mode, rate)
                    mine = [c[series][q] for c in cells if (c["mode"], c["rate"]) == key and c["target"] == t]
                    base = [c[series][q] for c in cells if (c["mode"], c["rate"]) == key and c["target"] == "direct"]
                    added.append(statistics.median(mine) - statistics.median(base) if mine and base else float("nan"))
                xs = [k + (i * 3 + j) * width - 0.4 + width / 2 for k in range(len(rates))]
                ax.bar(xs, added, width, color=COLORS[t], alpha=(1.0, 0.7, 0.4)[j], label=f"{t} {q}")
        ax.set_xticks(range(len(rates)), [f"{r:g} req/s" for r in rates])
        ax.set_ylabel("ms added over direct")
        ax.set_title(f"{title} (open loop; LiteLLM only at the lowest rate)", fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(note, fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "gateway_overhead_open_loop.png", dpi=110)


if __name__ == "__main__":
    main()
