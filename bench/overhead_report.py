"""The gateway-overhead report: results JSON → markdown tables, headline ratios, goals, profile summary, plots."""

from __future__ import annotations

import json
import statistics
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from bench.report_files import write_results

GOALS = "added p50 ≤ 1 ms and p99 ≤ 3 ms at 64 concurrent; ≥ 3× LiteLLM's req/s; ≤ 1/4 of its added latency"
QS = ("p50", "p90", "p99")


def _med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def aggregate(cells: list[dict[str, Any]], by: str = "concurrency") -> dict[tuple[str, Any, str], dict[str, Any]]:
    """(mode, concurrency or offered rate, target) → the median over rounds of every figure."""
    groups: dict[tuple[str, Any, str], list[dict[str, Any]]] = {}
    for c in cells:
        groups.setdefault((c["mode"], c[by], c["target"]), []).append(c)
    out = {}
    for k, cs in groups.items():
        a: dict[str, Any] = {
            f: _med([c[f] for c in cs]) for f in ("rps", "error_rate", "cpu_per_1k", "db_cpu_per_1k", "requests")
        }
        a["peak_in_flight"] = max(c.get("peak_in_flight") or 0 for c in cs)
        a["loadgen_core"] = _med([c["loadgen_cpu_s"] / c["seconds"] for c in cs])
        for series in ("total_ms", "ttft_ms"):
            if series in cs[0]:
                a[series] = {q: _med([c[series][q] for c in cs]) for q in QS}
        out[k] = a
    return out


def added(agg: dict, mode: str, conc: float, target: str, series: str = "total_ms") -> dict[str, float] | None:
    t, d = agg.get((mode, conc, target)), agg.get((mode, conc, "direct"))
    if not t or not d or series not in t:
        return None
    return {q: t[series][q] - d[series][q] for q in QS}


def sustained(agg: dict, mode: str, target: str) -> tuple[float, int | None]:
    """The highest req/s over the levels run with < 1% errors, and the level it was reached at."""
    best, level = 0.0, None
    for (m, conc, t), a in agg.items():
        if m == mode and t == target and a["error_rate"] < 0.01 and a["rps"] > best:
            best, level = a["rps"], conc
    return best, level


def headline(results: dict[str, Any]) -> dict[str, Any]:
    agg = aggregate(results["cells"])
    levels = results["settings"]["levels"]
    ref = 64 if 64 in levels else levels[-1]
    h: dict[str, Any] = {"level": ref}
    for target in ("floor", "gateway", "litellm"):
        h[target] = {
            "added_ms": added(agg, "json", ref, target),
            "added_ttft_ms": added(agg, "stream", ref, target, "ttft_ms"),
            "sustained_rps": sustained(agg, "json", target),
            "sustained_stream_rps": sustained(agg, "stream", target),
            "cold_start_s": _med(results["cold_start_s"].get(target, [])),
            "peak_rss_mb": results["peak_rss_mb"]["process"].get(target),
        }
    rate_agg = aggregate(results.get("rate_cells") or [], by="rate")
    rates = results["settings"].get("rates") or []
    h["rates"] = {
        r: {t: added(rate_agg, "json", r, t) for t in ("floor", "gateway", "litellm")}
        | {"stream_ttft": added(rate_agg, "stream", r, "gateway", "ttft_ms")}
        for r in rates
    }
    g, ll = h["gateway"], h["litellm"]
    if ll["added_ms"] and g["added_ms"]:
        h["rps_ratio"] = g["sustained_rps"][0] / ll["sustained_rps"][0] if ll["sustained_rps"][0] else None
        h["added_p50_ratio"] = g["added_ms"]["p50"] / ll["added_ms"]["p50"] if ll["added_ms"]["p50"] else None
    return h


def goals(h: dict[str, Any]) -> list[tuple[str, str, bool | None, str]]:
    """(goal, the gateway's figure, met, the floor's figure where it has one)."""
    g, f = h["gateway"], h["floor"]
    a = g["added_ms"] or {"p50": float("nan"), "p99": float("nan")}
    fa = f["added_ms"]
    rows: list[tuple[str, str, bool | None, str]] = [
        (f"added p50 ≤ 1 ms at {h['level']} concurrent", f"{a['p50']:.2f} ms", a["p50"] <= 1, _one(fa, "p50")),
        (f"added p99 ≤ 3 ms at {h['level']} concurrent", f"{a['p99']:.2f} ms", a["p99"] <= 3, _one(fa, "p99")),
    ]
    if "rps_ratio" in h:
        r, q = h["rps_ratio"], h["added_p50_ratio"]
        rows.append(("≥ 3× LiteLLM's sustained req/s", f"{r:.1f}×" if r else "-", bool(r and r >= 3), "-"))
        q_text = f"{q:.3f}×" if q is not None else "-"
        rows.append(("≤ 1/4 of LiteLLM's added p50", q_text, q is not None and q <= 0.25, "-"))
    rss = g["peak_rss_mb"]
    rows.append(("≤ 150 MB RSS per worker", f"{rss:.0f} MB" if rss else "-", bool(rss and rss <= 150), "-"))
    cs = g["cold_start_s"]
    rows.append(("cold start ≤ 2 s (spawn → first served request)", f"{cs:.2f} s", cs <= 2, "-"))
    return rows


def _one(d: dict[str, float] | None, q: str) -> str:
    return f"{d[q]:.2f} ms" if d else "-"


def _ms(d: dict[str, float] | None) -> str:
    return " / ".join(f"{d[q]:.2f}" for q in QS) if d else "-"


def _row(figures: Any) -> str:
    return " | ".join(_ms(d) for d in figures) + " |"


def table(results: dict[str, Any], mode: str, by: str = "concurrency") -> list[str]:
    """One row per (level, target): closed-loop concurrency levels, or offered rates (by="rate")."""
    rated = by == "rate"
    agg = aggregate(results.get("rate_cells") or [] if rated else results["cells"], by=by)
    targets = [t for t in ("direct", "floor", "gateway", "litellm") if any(k[2] == t for k in agg)]
    series = "total_ms"
    head = f"| {'offered req/s' if rated else 'conc'} | target | {'in flight ≤' if rated else 'req/s'} |"
    head += " errors | total p50 / p90 / p99 ms | added p50 / p90 / p99 ms |"
    sep = "|---|---|---|---|---|---|"
    if mode == "stream":
        head += " TTFT p50 / p90 / p99 ms | added TTFT p50 / p90 / p99 ms |"
        sep += "---|---|"
    head += " CPU s / 1k req | + PostgreSQL CPU s / 1k | load generator CPU (cores) |"
    sep += "---|---|---|"
    lines = [head, sep]
    for conc in results["settings"]["rates" if rated else "levels"]:
        for t in targets:
            a = agg.get((mode, conc, t))
            if not a:
                continue
            load = f"{a['peak_in_flight']:.0f}" if rated else f"{a['rps']:.0f}"
            row = f"| {conc:g} | {t} | {load} | {a['error_rate']:.2%} | {_ms(a[series])} | "
            row += ("-" if t == "direct" else _ms(added(agg, mode, conc, t))) + " |"
            if mode == "stream":
                row += f" {_ms(a['ttft_ms'])} | "
                row += ("-" if t == "direct" else _ms(added(agg, mode, conc, t, "ttft_ms"))) + " |"
            db = f"{a['db_cpu_per_1k']:.2f}" if t == "gateway" else "-"
            row += f" {a['cpu_per_1k']:.2f} | {db} | {a['loadgen_core']:.2f} |"
            lines.append(row)
    return lines


def markdown(results: dict[str, Any], notes: str | None) -> str:
    s, h = results["settings"], headline(results)
    out = [
        "# Gateway overhead: direct vs a bare pass-through vs our gateway vs LiteLLM proxy",
        "",
        f"Generated by `python -m bench.gateway_overhead` ({s['mode']} mode). Goals: {GOALS}; ≤ 150 MB RSS "
        "per worker; cold start ≤ 2 s. Added latency = target percentile − direct percentile at the same "
        "concurrency, both measured in the same run, interleaved. Sustained req/s = the highest closed-loop "
        "throughput over the concurrency levels with < 1% errors. The floor is bench/floor_proxy.py: the "
        "leanest proxy on the gateway's HTTP stack (uvicorn + aiohttp, no auth, no metering), run the same way; "
        "no gateway on this stack can add less than it does on this machine.",
        "",
        "## Goals",
        "",
        "| goal | measured (gateway) | met | the floor, same run |",
        "|---|---|---|---|",
    ]
    for goal, value, met, floor in goals(h):
        out.append(f"| {goal} | {value} | {'yes' if met else 'no'} | {floor} |")
    out += ["", "## Headline (non-streaming, JSON)", "", "| | floor | gateway | LiteLLM |", "|---|---|---|---|"]
    cols = (h["floor"], h["gateway"], h["litellm"])
    out.append(f"| added p50 / p90 / p99 at {h['level']} concurrent, ms | " + _row(x["added_ms"] for x in cols))
    out.append(f"| added TTFT p50 / p90 / p99 (stream) at {h['level']}, ms | " + _row(x["added_ttft_ms"] for x in cols))
    for label, field in (
        ("sustained req/s, JSON", "sustained_rps"),
        ("sustained req/s, stream", "sustained_stream_rps"),
    ):
        cells = [f"{x[field][0]:.0f} (at {x[field][1]})" if x[field][1] else "-" for x in cols]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    for label, field, fmt in (
        ("cold start (median), s", "cold_start_s", "{:.2f}"),
        ("peak RSS per worker, MB", "peak_rss_mb", "{:.0f}"),
    ):
        cells = [fmt.format(x[field]) if x[field] is not None and x[field] == x[field] else "-" for x in cols]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    for r, fig in h.get("rates", {}).items():
        out.append(
            f"| added p50 / p90 / p99 at a fixed {r:g} req/s (open loop), ms | "
            + _row(fig[t] for t in ("floor", "gateway", "litellm"))
        )
    out += ["", "## Non-streaming, closed loop (wrk, 1 thread)", "", *table(results, "json")]
    out += ["", "## Streaming, closed loop (bench/loadgen.py, 1 asyncio process)", "", *table(results, "stream")]
    if results.get("rate_cells"):
        out += [
            "",
            "## At a fixed offered rate (open loop, bench/loadgen.py)",
            "",
            "Requests are due at fixed intervals whatever the answers do; latency counts from when a request was "
            "due. Below saturation this is the latency the hot path adds, without the queue a closed loop "
            "builds in front of a busy worker. `in flight ≤` is the most requests outstanding at once.",
            "",
            "Non-streaming:",
            "",
            *table(results, "json", by="rate"),
            "",
            "Streaming:",
            "",
            *table(results, "stream", by="rate"),
        ]
    out += _failure_lines(results)
    out += ["", "## Cold start: process spawn → first 200 chat completion, seconds", ""]
    for t, v in results["cold_start_s"].items():
        out.append(f"- {t}: " + ", ".join(f"{x:.2f}" for x in v) + f" (median {_med(v):.2f})")
    out += [
        "",
        "## Peak RSS, MB (sampled every 0.2 s over the whole run)",
        "",
        "| process tree | largest process | whole tree |",
        "|---|---|---|",
    ]
    for t, v in results["peak_rss_mb"]["process"].items():
        out.append(f"| {t} | {v:.0f} | {results['peak_rss_mb']['tree'][t]:.0f} |")
    out += ["", "## Profile of the gateway worker under load (py-spy; json_c1 = JSON at 1 concurrent, else 64)", ""]
    out += profile_lines(results.get("profile") or {})
    if notes:
        out += ["", notes.strip()]
    out += ["", "## Machine, versions, settings", "", "```json"]
    out.append(json.dumps({k: results[k] for k in ("machine", "versions", "settings")}, indent=2, ensure_ascii=False))
    out += [
        "```",
        "",
        "Plots: gateway_overhead_latency.png, gateway_overhead_throughput.png, gateway_overhead_cpu.png, "
        "gateway_overhead_open_loop.png",
        "",
    ]
    return "\n".join(out)


def _failure_lines(results: dict[str, Any]) -> list[str]:
    """Which cells had errors, and what they were: HTTP statuses other than 200, or no answer at all."""
    lines = []
    for c in [*results["cells"], *(results.get("rate_cells") or [])]:
        if not c["errors"]:
            continue
        load = f"{c['rate']:g} req/s" if c.get("rate") else f"{c['concurrency']} concurrent"
        bad = {k: v for k, v in (c.get("statuses") or {}).items() if str(k) != "200"}
        what = [f"HTTP {k} × {v}" for k, v in bad.items()] + [
            f"{k} × {v}" for k, v in (c.get("failures") or {}).items()
        ]
        detail = ", ".join(what) or "no detail recorded"
        lines.append(f"- round {c['round']}, {c['mode']}, {load}, {c['target']}: {c['errors']} — {detail}")
    return ["", "## Errors", "", *(lines or ["None in any cell."])]


# Each sample goes to the first bucket whose marker is on its stack (order matters: most specific first).
BUCKETS = (
    ("usage write + billing charge (UsageWriter, group commit)", ("gateway/usage/writer", "billing/ledger")),
    ("admission: open row, limits, holds (group commit)", ("gateway/admission/", "billing/admission")),
    ("key lookup (gateway/auth, cached)", ("gateway/auth/",)),
    ("model resolve (gateway/adapters, cached)", ("gateway/adapters/",)),
    ("engine call: aiohttp (gateway/engine)", ("gateway/engine/", "aiohttp/")),
    ("other DB work (asyncpg frames whose caller py-spy did not record)", ("sqlalchemy/", "asyncpg/")),
    ("metering bookkeeping (ProxyService._record, usage_row)", ("ProxyService._record", "usage_row")),
    ("Litestar: routing, DI, body parsing, response serialisation", ("litestar/",)),
    ("uvicorn + httptools (HTTP server protocol)", ("uvicorn/protocols", "httptools")),
    ("event loop itself (uvloop, in C) and task switching", ("Runner.run", "asyncio/")),
)
_ROOT_FRAMES = ("gateway/__main__.py", "gateway/cli.py")


def summarise_profile(raw: Path) -> dict[str, Any]:
    """py-spy's raw (collapsed) stacks → exclusive buckets, leaf packages, gateway functions (inclusive)."""
    leaf_pkg: Counter[str] = Counter()
    leaf_fn: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    buckets: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count, frames = int(n), stack.split(";")
        total += count
        leaf_fn[frames[-1]] += count
        leaf_pkg[_package(frames[-1])] += count
        bucket = next((name for name, marks in BUCKETS if any(m in stack for m in marks)), "other")
        buckets[bucket] += count
        for f in {f for f in frames if "gateway/" in f and not any(r in f for r in _ROOT_FRAMES)}:
            ours[f] += count
    if not total:
        return {"samples": 0}

    def share(c: Counter[str], n: int) -> list[tuple[str, float]]:
        return [(k, v / total) for k, v in c.most_common(n)]

    return {
        "samples": total,
        "buckets": share(buckets, len(BUCKETS) + 1),
        "by_package": share(leaf_pkg, 12),
        "by_leaf": share(leaf_fn, 15),
        "gateway": share(ours, 15),
    }


def _package(frame: str) -> str:
    where = frame[frame.rfind("(") + 1 :] if "(" in frame else frame
    path = where.replace("\\", "/")
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0]
    if "/gateway/" in path or path.startswith("gateway/"):
        return "gateway"
    if "python3" in path or path.startswith("<"):
        return "stdlib: " + path.rsplit("/", 1)[-1].split(":", 1)[0]
    return path.split(":", 1)[0]


def profile_lines(prof: dict[str, Any]) -> list[str]:
    if not prof:
        return ["(not profiled in this run)"]
    out = []
    for mode, p in prof.items():
        if not p.get("samples"):
            out.append(f"- {mode}: {p.get('error', 'no samples')}")
            continue
        out += [
            f"**{mode}** ({p['samples']} samples of the busy worker)",
            "",
            "| where the CPU is (leaf frame's package) | share |",
            "|---|---|",
        ]
        out += [f"| {k} | {v:.1%} |" for k, v in p["by_package"]]
        if "buckets" in p:
            out += ["", "| where the CPU goes (each sample counted once) | share |", "|---|---|"]
            out += [f"| {k} | {v:.1%} |" for k, v in p["buckets"]]
        out += ["", "| gateway function (inclusive) | share |", "|---|---|"]
        out += [f"| `{k}` | {v:.1%} |" for k, v in p["gateway"]]
        out += ["", "| hottest leaf frames | share |", "|---|---|"]
        out += [f"| `{k}` | {v:.1%} |" for k, v in p["by_leaf"]]
        out.append("")
    return out


def write(results: dict[str, Any], out_dir: Path) -> None:
    write_results("gateway_overhead", results, out_dir, markdown, "bench.plot_overhead")


def main() -> None:
    """Rewrite the markdown and plots from a results JSON (re-reading py-spy's raw files beside it)."""
    json_path = Path(sys.argv[1])
    results = json.loads(json_path.read_text())
    for mode in list(results.get("profile") or {}):
        raw = json_path.parent / f"gateway_profile_{mode}.txt"
        if raw.exists():
            results["profile"][mode] = summarise_profile(raw)
    write(results, json_path.parent)


if __name__ == "__main__":
    main()
