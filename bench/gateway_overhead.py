"""Gateway overhead, side by side: direct to a mock engine, through a bare pass-through (the floor), through our
gateway, through LiteLLM proxy.

    python -m bench.gateway_overhead            # full run (~12 min): writes bench/results/gateway_overhead.*
    python -m bench.gateway_overhead --smoke    # seconds: one concurrency level, no LiteLLM, into --out

One run, interleaved: for every mode (JSON, SSE stream), concurrency level and round, the targets are measured
one after another in turn (the order rotates each round), so a drift of this shared machine hits all of them.
The gateway runs as in production: real key auth, a real PostgreSQL and its durable group-committed usage
rows. wrk (one thread) drives the JSON runs; bench/loadgen.py (one asyncio process) the streams, because
it sees the first token. Both report their own CPU. LiteLLM runs from its own virtualenv (.data/bench-venv).
The floor (bench/floor_proxy.py) is the leanest proxy on the gateway's HTTP stack, uvicorn + aiohttp, doing
nothing else: what it adds is what the stack costs before the gateway does any work of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench import overhead_report, procs
from bench.procs import ROOT, Service

PROMPT = "Summarise the following support ticket in one sentence. " * 4
_WRK_REPORT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, '
    .. '"status": %d, "timeout": %d, "p50": %d, "p90": %d, "p99": %d}\\n', summary.requests, summary.duration,
    e.connect, e.read, e.write, e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99)))
end
"""


@dataclass
class Target:
    name: str
    base: str
    key: str | None
    pids: list[int]  # whose CPU is charged to this target
    extra_pids: list[int]  # charged separately (the gateway's PostgreSQL)


def body(stream: bool, tokens: int) -> dict[str, Any]:
    b: dict[str, Any] = {
        "model": "tiny-base",
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": tokens,
    }
    if stream:
        b |= {"stream": True, "stream_options": {"include_usage": True}}
    return b


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk not found; installing it from Debian's packages", flush=True)
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run([*sudo, "apt-get", "install", "-y", "wrk"], check=True, capture_output=True)
    return shutil.which("wrk") or "wrk"


def run_wrk(wrk: str, target: Target, payload: dict[str, Any], conc: int, seconds: float, lua_dir: Path) -> dict:
    lua = lua_dir / f"post-{target.name}.lua"
    headers = 'wrk.headers["Content-Type"] = "application/json"\n'
    if target.key:
        headers += f'wrk.headers["Authorization"] = "Bearer {target.key}"\n'
    lua.write_text(f'wrk.method = "POST"\nwrk.body = [[{json.dumps(payload)}]]\n{headers}{_WRK_REPORT}')
    argv = [wrk, "-t1", f"-c{conc}", f"-d{max(1, round(seconds))}s", "--timeout", "10s", "-s", str(lua)]
    proc = subprocess.Popen([*argv, target.base + "/v1/chat/completions"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    line = next((x for x in out.splitlines() if x.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no report (status {status}):\n{out}")
    r = json.loads(line[len("WRKJSON ") :])
    secs = r["duration_us"] / 1e6
    errors = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
    ok = r["requests"] - r["status"]
    return {
        "requests": ok,
        "all_requests": r["requests"],
        "errors": errors,
        "failures": {f"wrk {k} errors": r[k] for k in ("connect", "read", "write", "timeout") if r[k]},
        "statuses": {"non-2xx": r["status"]} if r["status"] else {},
        "seconds": secs,
        "rps": ok / secs,
        "total_ms": {q: r[q] / 1000 for q in ("p50", "p90", "p99")},
        "loadgen_cpu_s": usage.ru_utime + usage.ru_stime,
    }


def run_loadgen(
    target: Target, payload: dict[str, Any], conc: int, seconds: float, warmup: float, rate: float | None = None
) -> dict:
    argv = [sys.executable, "-m", "bench.loadgen", "--url", target.base + "/v1/chat/completions"]
    argv += ["--body", json.dumps(payload), "-c", str(conc), "-d", str(seconds), "--warmup", str(warmup)]
    if rate:
        argv += ["--rate", str(rate)]
    if target.key:
        argv += ["--key", target.key]
    out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def measure(
    wrk: str, t: Target, mode: str, conc: int, args: argparse.Namespace, lua_dir: Path, rate: float | None = None
) -> dict:
    """One cell: closed loop at `conc` clients, or open loop at `rate` requests/s (bench/loadgen.py, both
    modes: wrk keeps a closed loop)."""
    payload = body(mode == "stream", args.tokens)
    if mode == "json" and not rate:
        run_wrk(wrk, t, payload, conc, args.warmup, lua_dir)  # warm-up, not counted
    cpu0, extra0 = procs.cpu_seconds(t.pids), procs.cpu_seconds(t.extra_pids)
    if mode == "json" and not rate:
        r = run_wrk(wrk, t, payload, conc, args.duration, lua_dir)
    else:
        r = run_loadgen(t, payload, conc, args.duration, args.warmup, rate)
    cpu, extra = procs.cpu_seconds(t.pids) - cpu0, procs.cpu_seconds(t.extra_pids) - extra0
    n = max(1, r["all_requests"])
    attempts = r["requests"] + r["errors"]
    r |= {
        "target": t.name,
        "mode": mode,
        "concurrency": conc,
        "rate": rate,
        "cpu_s": cpu,
        "cpu_per_1k": cpu / n * 1000,
        "db_cpu_per_1k": extra / n * 1000,
        "error_rate": r["errors"] / attempts if attempts else 1.0,
    }
    return r


def _progress(rnd: int, mode: str, load: str, t: Target, cell: dict, extra: str = "") -> None:
    print(
        f"round {rnd} {mode:6} {load} {t.name:8} {cell['rps']:8.0f} req/s p50 {cell['total_ms']['p50']:7.2f} "
        f"p99 {cell['total_ms']['p99']:7.2f} ms {extra}err {cell['error_rate']:.2%}",
        flush=True,
    )


# The bench tenant's limits: checked and counted on every request (its rate windows and concurrency in the
# admission transaction, with the lock and holds of a prepaid admission), but far above what the bench sends.
TENANT_LIMITS = {"rpm_limit": 10_000_000, "tpm_limit": 1_000_000_000, "max_concurrent_requests": 100_000}


def tenant_key(base: str, admin_token: str) -> str:
    """A prepaid tenant (the default) with TENANT_LIMITS, and a key of it."""
    admin = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {admin_token}"}, timeout=30)
    tenant = admin.post("/admin/tenants", json={"name": f"bench-{secrets.token_hex(4)}"}).json()["id"]
    admin.patch(f"/admin/tenants/{tenant}", json=TENANT_LIMITS).raise_for_status()
    key: str = admin.post(f"/admin/tenants/{tenant}/keys", json={"name": "bench"}).json()["key"]
    return key


def profile(gw: Service, wrk: str, t: Target, args: argparse.Namespace, out_dir: Path, lua_dir: Path) -> dict:
    """py-spy samples the gateway worker under load: JSON and stream at 64 concurrent, and JSON at 1 (where
    nothing is amortized over a batch: the per-request floor)."""
    spy = procs.BENCH_VENV / "bin" / "py-spy"
    if not spy.exists():
        return {"error": "py-spy is not installed in .data/bench-venv"}
    worker = max(procs.tree(gw.pid), key=lambda p: p.memory_info().rss).pid  # the worker, not a supervisor
    found: dict[str, Any] = {}
    for key, mode, conc in (("json", "json", 64), ("stream", "stream", 64), ("json_c1", "json", 1)):
        raw = out_dir / f"gateway_profile_{key}.txt"
        spy_argv = [str(spy), "record", "-p", str(worker), "-d", str(int(args.duration)), "-r", "250"]
        spy_argv += ["-f", "raw", "-o", str(raw), "--nonblocking"]
        sampler = subprocess.Popen(spy_argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        measure(wrk, t, mode, conc, args, lua_dir)
        sampler.wait(60)
        found[key] = overhead_report.summarise_profile(raw) if raw.exists() else {"error": "no samples"}
    return found


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="seconds-long: concurrency 16, no LiteLLM, no profile")
    p.add_argument("--levels", default="1,16,64,256", help="closed loop: concurrent clients")
    p.add_argument(
        "--rates",
        default="25,200",
        help="open loop: offered requests/s, below the gateway's saturation, so that added latency is the hot "
        "path's and not a queue's (LiteLLM runs only the lowest: it saturates near 60-80 req/s here)",
    )
    p.add_argument("--duration", type=float, default=6.0, help="measured seconds per cell")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--workers", type=int, default=1, help="worker processes of the gateway and of LiteLLM")
    p.add_argument("--latency-ms", type=float, default=5.0, help="the mock engine's time to first token")
    p.add_argument("--tokens", type=int, default=16, help="completion tokens per answer")
    p.add_argument("--cold-starts", type=int, default=3)
    p.add_argument("--no-litellm", action="store_true")
    p.add_argument("--no-floor", action="store_true", help="skip the pass-through floor (bench/floor_proxy.py)")
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = p.parse_args()
    if args.smoke:
        args.levels, args.rates, args.duration, args.warmup, args.rounds, args.cold_starts = "16", "50", 1.0, 0.3, 1, 1
        args.no_litellm = args.no_profile = True
    levels = [int(x) for x in args.levels.split(",")]
    rates = [float(x) for x in args.rates.split(",") if x]
    with_litellm = not args.no_litellm
    if with_litellm and not (procs.BENCH_VENV / "bin" / "litellm").exists():
        raise SystemExit(f"LiteLLM is not installed: {procs.BENCH_VENV}/bin/pip install 'litellm[proxy]'")
    wrk = ensure_wrk()
    run_dir = ROOT / ".data" / "bench" / f"overhead-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir.mkdir(parents=True)
    args.out.mkdir(parents=True, exist_ok=True)

    from devstack.postgres import EmbeddedPostgres
    from gateway.migrate import upgrade

    pg = EmbeddedPostgres(run_dir / "postgres")
    db_url = pg.start()
    upgrade(db_url)
    admin_token, master_key = secrets.token_urlsafe(32), "sk-" + secrets.token_hex(16)
    mock = procs.mock(procs.free_port(), args.latency_ms, args.tokens, run_dir)
    services: list[Service] = [mock]
    rss = procs.RssSampler()
    try:
        mock.start()
        mock.wait_until(lambda b: httpx.get(b + "/health", timeout=2).status_code == 200)
        gw = procs.gateway(db_url, mock.url, procs.free_port(), args.workers, admin_token, run_dir)
        services.append(gw)
        gw.start()
        gw.wait_until(lambda b: httpx.get(b + "/readyz", timeout=2).status_code == 200)
        key = tenant_key(gw.url, admin_token)
        pg_pid = pg.pid()
        targets = [Target("direct", mock.url, None, [mock.pid], [])]
        if not args.no_floor:
            fl = procs.floor(mock.url, procs.free_port(), args.workers, run_dir)
            services.append(fl)
            fl.start()
            fl.wait_until(lambda b: httpx.get(b + "/health", timeout=2).status_code == 200)
            targets.append(Target("floor", fl.url, None, [fl.pid], []))
            rss.watch("floor", fl.pid)
        gateway = Target("gateway", gw.url, key, [gw.pid], [pg_pid] if pg_pid else [])
        targets.append(gateway)
        if with_litellm:
            ll = procs.litellm(mock.url, procs.free_port(), args.workers, master_key, run_dir)
            services.append(ll)
            ll.start()
            ll.wait_until(procs.answers_chat(master_key), timeout_s=180)
            targets.append(Target("litellm", ll.url, master_key, [ll.pid], []))
        for name, pid in [("mock", mock.pid), ("gateway", gw.pid), *([("litellm", ll.pid)] if with_litellm else [])]:
            rss.watch(name, pid)
        rss.start()

        cells, rate_cells = [], []
        for rnd in range(args.rounds):
            order = targets[rnd % len(targets) :] + targets[: rnd % len(targets)]
            for mode in ("json", "stream"):
                for conc in levels:
                    for t in order:
                        cell = measure(wrk, t, mode, conc, args, run_dir) | {"round": rnd}
                        cells.append(cell)
                        _progress(rnd, mode, f"c={conc:<3}", t, cell)
                for rate in rates:
                    for t in order:
                        if t.name == "litellm" and rate > min(rates):
                            continue
                        cell = measure(wrk, t, mode, 0, args, run_dir, rate) | {"round": rnd}
                        rate_cells.append(cell)
                        _progress(rnd, mode, f"{rate:5.0f}/s", t, cell, f"in flight ≤ {cell['peak_in_flight']} ")
        prof = {} if args.no_profile else profile(gw, wrk, gateway, args, args.out, run_dir)

        cold: dict[str, list[float]] = {"gateway": []}
        gw.stop()
        if with_litellm:
            cold["litellm"] = []
            ll.stop()
        for _ in range(args.cold_starts):  # alternate, A B A B, so drift hits both
            gw.start()
            cold["gateway"].append(gw.wait_until(procs.answers_chat(key)))
            gw.stop()
            if with_litellm:
                ll.start()
                cold["litellm"].append(ll.wait_until(procs.answers_chat(master_key), timeout_s=180))
                ll.stop()
    finally:
        if rss.trees:
            rss.stop()
        for s in services:
            s.stop()
        pg.stop()

    results = {
        "settings": {
            "mode": "smoke" if args.smoke else "full",
            "levels": levels,
            "rates": rates,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "rounds": args.rounds,
            "workers": args.workers,
            "mock_latency_ms": args.latency_ms,
            "completion_tokens": args.tokens,
            "prompt_chars": len(PROMPT),
            "tenant": {"billing_mode": "prepaid", **TENANT_LIMITS},
            "litellm_config": procs.LITELLM_CONFIG.format(api_base="http://127.0.0.1:<mock>/v1", master_key="sk-…"),
            "litellm_env": procs.LITELLM_ENV,
            "floor": None if args.no_floor else "bench/floor_proxy.py: uvicorn + aiohttp pass-through",
        },
        "machine": procs.machine(),
        "versions": procs.versions(),
        "cells": cells,
        "rate_cells": rate_cells,
        "cold_start_s": cold,
        "peak_rss_mb": {
            "process": {k: v / 2**20 for k, v in rss.peak_process.items()},
            "tree": {k: v / 2**20 for k, v in rss.peak_tree.items()},
        },
        "profile": prof,
    }
    overhead_report.write(results, args.out)
    print(f"wrote {args.out}/gateway_overhead.md", flush=True)


if __name__ == "__main__":
    main()
