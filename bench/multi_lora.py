"""Multi-LoRA throughput on the real vLLM CPU engine: base only vs requests spread over 1, 4, 16, 64 adapters.

    python -m bench.multi_lora            # full (~10 min): writes bench/results/multi_lora.{md,json,png}
    python -m bench.multi_lora --smoke    # about a minute with its own engine: counts 0 and 2, one round

Every request is the same streamed completion (`max_tokens` 32, `ignore_eos`, temperature 0), so every request
costs the engine exactly the same number of generated tokens; only the adapter differs. A cell is one
adapter count on one path (direct to the engine, or through the gateway with a real key, PostgreSQL and
metering) at a fixed concurrency for a fixed time, driven by bench/loadgen.py in its own process (its CPU is
reported). The model rotates over the cell's adapters request by request. Cells are interleaved: each round
runs every count in a rotating order and, for each count, both paths (alternating which goes first), so the
ratio to base-only is always taken within one round. The engine's /metrics (generation tokens, the adapters
it ran) are read around every cell to confirm what ran. Then the cold load: the first request to an adapter
evicted from the engine's CPU cache (--max-cpu-loras) against the next one, repeated.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench import multi_lora_report, procs
from bench.procs import ROOT

PROMPT = "Tell me a story about a cat, a dog and a bird in the garden."
_LABEL = re.compile(r'(\w+)="([^"]*)"')


@dataclass
class Settings:
    counts: list[int] = field(default_factory=lambda: [0, 1, 4, 16, 64])
    rounds: int = 5
    duration_s: float = 6.0
    warmup_s: float = 1.5
    concurrency: int = 8
    max_tokens: int = 32
    cold_reps: int = 8
    paths: list[str] = field(default_factory=lambda: ["direct", "gateway"])
    # The engine's LoRA settings (what the engine under test was started with).
    max_loras: int = 2
    max_cpu_loras: int = 4
    max_lora_rank: int = 8
    mode: str = "full"

    @classmethod
    def smoke(cls) -> Settings:
        """A few seconds of load: base only and 2 adapters, one round, one cold load."""
        return cls(counts=[0, 2], rounds=1, duration_s=3.0, warmup_s=1.0, cold_reps=1, mode="smoke")

    def adapters_needed(self) -> int:
        """Enough for the largest count and for a cold load (a target plus more evictors than the cache holds)."""
        return max(max(self.counts), self.max_cpu_loras + 2)


@dataclass
class Stack:
    """What is measured: the engine, and optionally a gateway in front of it (pids for CPU accounting)."""

    engine_url: str
    models_dir: Path
    gateway_url: str | None = None
    admin_token: str | None = None
    engine_pid: int | None = None
    gateway_pid: int | None = None
    db_pid: int | None = None


@dataclass
class Route:
    """One way in: the URL, the key and the model name of each adapter (index i → lora-(i+1))."""

    name: str
    base: str
    key: str | None
    adapters: list[str]
    engine_names: list[str]  # the same adapters as the engine calls them (for its metrics)


def payload(settings: Settings, model: str, stream: bool = True) -> dict[str, Any]:
    b: dict[str, Any] = {
        "model": model,
        "prompt": PROMPT,
        "max_tokens": settings.max_tokens,
        "temperature": 0,
        "ignore_eos": True,
    }
    if stream:
        b |= {"stream": True, "stream_options": {"include_usage": True}}
    return b


def register_direct(engine_url: str, models_dir: Path, n: int) -> tuple[Route, list[float]]:
    """Load lora-1..n into the engine under fresh names (POST /v1/load_lora_adapter); seconds per load."""
    tag = secrets.token_hex(3)
    names, took = [], []
    with httpx.Client(base_url=engine_url, timeout=60) as c:
        for i in range(1, n + 1):
            name = f"ml{tag}-{i}"
            t0 = time.perf_counter()
            r = c.post("/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(adapter_dir(models_dir, i))})
            took.append(time.perf_counter() - t0)
            if r.status_code != 200:
                raise RuntimeError(f"engine refused {name}: {r.status_code} {r.text[:200]}")
            names.append(name)
    return Route("direct", engine_url, None, names, names), took


def upload_gateway(gateway_url: str, admin_token: str, models_dir: Path, n: int) -> tuple[Route, list[float]]:
    """A new tenant uploads lora-1..n through POST /v1/adapters; seconds per upload (→ ready)."""
    tag = secrets.token_hex(3)
    with httpx.Client(base_url=gateway_url, headers={"Authorization": f"Bearer {admin_token}"}, timeout=60) as a:
        tenant = a.post("/admin/tenants", json={"name": f"bench-multi-lora-{tag}"}).json()["id"]
        key: str = a.post(f"/admin/tenants/{tenant}/keys", json={"name": "bench"}).json()["key"]
    names, ids, took = [], [], []
    with httpx.Client(base_url=gateway_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
        for i in range(1, n + 1):
            folder = adapter_dir(models_dir, i)
            files = [
                ("file", (f, (folder / f).read_bytes())) for f in ("adapter_config.json", "adapter_model.safetensors")
            ]
            t0 = time.perf_counter()
            r = c.post("/v1/adapters", data={"name": f"ml-{i}"}, files=files)
            took.append(time.perf_counter() - t0)
            if r.status_code != 201 or r.json().get("status") != "ready":
                raise RuntimeError(f"upload of lora-{i} failed: {r.status_code} {r.text[:200]}")
            names.append(f"ml-{i}")
            ids.append(r.json()["id"])  # the gateway loads each deployment into the engine under its id
    return Route("gateway", gateway_url, key, names, ids), took


def adapter_dir(models_dir: Path, i: int) -> Path:
    folder = models_dir / "adapters" / f"lora-{i}"
    if not (folder / "adapter_model.safetensors").exists():
        raise FileNotFoundError(f"{folder} is missing: tinymodel.ensure_built(models_dir, adapters={i}) builds it")
    return folder


def scrape(engine_url: str) -> tuple[float, list[tuple[list[str], list[str], float]]]:
    """The engine's generated-token counter and every (running, waiting, last seen) of vllm:lora_requests_info."""
    text = httpx.get(f"{engine_url}/metrics", timeout=10).text
    tokens, lora = 0.0, []
    for line in text.splitlines():
        if line.startswith("vllm:generation_tokens_total{"):
            tokens += float(line.rsplit(" ", 1)[1])
        elif line.startswith("vllm:lora_requests_info{"):
            labels = dict(_LABEL.findall(line))
            running = [x for x in labels.get("running_lora_adapters", "").split(",") if x]
            waiting = [x for x in labels.get("waiting_lora_adapters", "").split(",") if x]
            lora.append((running, waiting, float(line.rsplit(" ", 1)[1])))
    return tokens, lora


def settled_scrape(engine_url: str, before: float) -> tuple[float, list[tuple[list[str], list[str], float]]]:
    """scrape() once the engine's counters stop moving: vLLM records a request's last tokens a moment after the
    client has its last chunk, so a scrape right after the load generator exits can miss the final request."""
    tokens, lora = scrape(engine_url)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        time.sleep(0.3)
        again, lora = scrape(engine_url)
        if again == tokens and again > before:
            break
        tokens = again
    return tokens, lora


def busy_cpu_s() -> float:
    """CPU seconds the whole machine spent busy (all processes, everyone's)."""
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


def run_cell(stack: Stack, path: Route, count: int, settings: Settings, rnd: int) -> dict[str, Any]:
    models = path.adapters[:count] if count else ["tiny-base"]
    engine_names = set(path.engine_names[:count])
    argv = [sys.executable, "-m", "bench.loadgen", "--url", path.base + "/v1/completions"]
    argv += ["--body", json.dumps(payload(settings, models[0])), "-c", str(settings.concurrency)]
    argv += ["-d", str(settings.duration_s), "--warmup", str(settings.warmup_s), "--models", ",".join(models)]
    if path.key:
        argv += ["--key", path.key]
    pids = {"engine": stack.engine_pid, "gateway": stack.gateway_pid, "postgres": stack.db_pid}
    tokens0, _ = scrape(stack.engine_url)
    cpu0 = {k: procs.cpu_seconds([p]) for k, p in pids.items() if p}
    busy0, wall0, t0 = busy_cpu_s(), time.time(), time.perf_counter()
    out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    wall = time.perf_counter() - t0
    busy, wall1 = busy_cpu_s() - busy0, time.time()
    cpu = {k: procs.cpu_seconds([p]) - cpu0[k] for k, p in pids.items() if p}
    tokens1, lora = settled_scrape(stack.engine_url, tokens0)
    r: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    seen: set[str] = set()
    max_running = max_waiting = 0
    for running, waiting, when in lora:
        if wall0 <= when <= wall1 + 1:
            seen.update(running)
            max_running, max_waiting = max(max_running, len(running)), max(max_waiting, len(waiting))
    generated = tokens1 - tokens0
    ours = sum(cpu.values()) + r["loadgen_cpu_s"]
    attempts = r["requests"] + r["errors"]
    r |= {
        "round": rnd,
        "path": path.name,
        "adapters": count,
        "tokens_per_s": r["requests"] * settings.max_tokens / r["seconds"],
        "error_rate": r["errors"] / attempts if attempts else 1.0,
        "wall_s": wall,
        "loadgen_cores": r["loadgen_cpu_s"] / wall,
        "cores": {k: v / wall for k, v in cpu.items()},
        "other_cores": max(0.0, busy - ours) / wall,  # everyone else on this shared machine
        "load1": psutil.getloadavg()[0],
        "engine": {
            "generated_tokens": generated,
            "tokens_per_request": generated / max(1, r["all_requests"]),
            "adapters_seen": len(seen & engine_names),
            "foreign_adapters_seen": len(seen - engine_names),
            "max_running_adapters": max_running,
            "max_waiting_adapters": max_waiting,
        },
    }
    return r


def timed_stream(client: httpx.Client, url: str, body: dict[str, Any]) -> tuple[float, float]:
    """(time to first token, total) in ms of one streamed request."""
    t0 = time.perf_counter()
    first = None
    with client.stream("POST", url, json=body) as s:
        if s.status_code != 200:
            raise RuntimeError(f"{body['model']}: {s.status_code} {s.read()[:200]!r}")
        for line in s.iter_lines():
            if first is None and '"text"' in line:
                first = time.perf_counter()
    t1 = time.perf_counter()
    return ((first or t1) - t0) * 1000, (t1 - t0) * 1000


def cold_load(paths: list[Route], settings: Settings) -> list[dict[str, Any]]:
    """Per repetition and path: base, then an adapter evicted from the CPU cache (cold), then the same again (warm)."""
    rows = []
    evictors = settings.max_cpu_loras + 1
    n = len(paths[0].adapters)
    for rep in range(settings.cold_reps):
        target = (rep * 7) % n
        others = [(target + 1 + k) % n for k in range(evictors)]
        for path in paths if rep % 2 == 0 else paths[::-1]:
            headers = {"Authorization": f"Bearer {path.key}"} if path.key else {}
            with httpx.Client(base_url=path.base, headers=headers, timeout=60) as c:
                for k in others:  # fill the LRU cache with others: the target is evicted
                    c.post("/v1/completions", json=payload(settings, path.adapters[k], False) | {"max_tokens": 1})
                row: dict[str, Any] = {"rep": rep, "path": path.name, "adapter": path.adapters[target]}
                for kind, model in (("base", "tiny-base"), ("cold", row["adapter"]), ("warm", row["adapter"])):
                    ttft, total = timed_stream(c, "/v1/completions", payload(settings, model))
                    row[f"{kind}_ttft_ms"], row[f"{kind}_total_ms"] = ttft, total
            rows.append(row)
            print(
                f"cold {rep} {path.name:8} base {row['base_total_ms']:6.0f}  cold {row['cold_total_ms']:6.0f}  "
                f"warm {row['warm_total_ms']:6.0f} ms",
                flush=True,
            )
    return rows


def run(stack: Stack, settings: Settings, out: Path) -> dict[str, Any]:
    """Register the adapters, run the interleaved cells and the cold loads, write the report into `out`."""
    n = settings.adapters_needed()
    paths, setup = [], {}
    if "direct" in settings.paths:
        direct, setup["direct_load_s"] = register_direct(stack.engine_url, stack.models_dir, n)
        paths.append(direct)
    if "gateway" in settings.paths:
        if not (stack.gateway_url and stack.admin_token):
            raise ValueError("the gateway path needs a gateway URL and its admin token")
        gw, setup["gateway_upload_s"] = upload_gateway(stack.gateway_url, stack.admin_token, stack.models_dir, n)
        paths.append(gw)
    started = time.time()
    warm = Settings(**asdict(settings) | {"duration_s": settings.warmup_s})
    for path in paths:  # a fresh engine is slow on its first batches: warm both paths up, not counted
        for count in (0, max(settings.counts)):
            run_cell(stack, path, count, warm, -1)
    cells = []
    for rnd in range(settings.rounds):
        k = rnd % len(settings.counts)
        for count in settings.counts[k:] + settings.counts[:k]:
            for path in paths if (rnd + count) % 2 == 0 else paths[::-1]:
                cell = run_cell(stack, path, count, settings, rnd)
                cells.append(cell)
                print(
                    f"round {rnd} {count:3} adapters {path.name:8} {cell['tokens_per_s']:6.0f} tok/s "
                    f"p50 {cell['total_ms']['p50']:6.0f} ms  ttft p50 {cell['ttft_ms']['p50']:6.0f} ms  "
                    f"err {cell['error_rate']:.1%}  loadgen {cell['loadgen_cores']:.2f} cores  "
                    f"others {cell['other_cores']:.2f} cores",
                    flush=True,
                )
    cold = cold_load(paths, settings)
    results = {
        "settings": asdict(settings) | {"prompt": PROMPT, "adapters_registered": n},
        "machine": procs.machine(),
        "versions": multi_lora_report.versions(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)),
        "minutes": (time.time() - started) / 60,
        "setup": setup,
        "cells": cells,
        "cold": cold,
    }
    multi_lora_report.write(results, out)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="counts 0 and 2, one short round, one cold load")
    p.add_argument("--counts", default="0,1,4,16,64")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--duration", type=float, default=6.0, help="measured seconds per cell")
    p.add_argument("--warmup", type=float, default=1.5)
    p.add_argument("-c", "--concurrency", type=int, default=8)
    p.add_argument("--cold-reps", type=int, default=8)
    p.add_argument("--direct-only", action="store_true")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = p.parse_args()
    s = Settings(
        counts=[int(x) for x in args.counts.split(",")],
        rounds=args.rounds,
        duration_s=args.duration,
        warmup_s=args.warmup,
        concurrency=args.concurrency,
        cold_reps=args.cold_reps,
        paths=["direct"] if args.direct_only else ["direct", "gateway"],
    )
    if args.smoke:
        s = Settings.smoke()
        s.paths = ["direct"] if args.direct_only else s.paths
    from devstack import tinymodel
    from devstack.engine import EngineOptions, LocalEngine
    from devstack.postgres import EmbeddedPostgres
    from gateway.migrate import upgrade

    models = ROOT / ".data" / "models"
    tinymodel.ensure_built(models, adapters=s.adapters_needed())
    run_dir = ROOT / ".data" / "bench" / f"multi-lora-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir.mkdir(parents=True)
    opts = EngineOptions(
        model_dir=models / tinymodel.BASE_NAME,
        served_name=tinymodel.BASE_NAME,
        port=procs.free_port(),
        data_dir=run_dir / "engine",
        max_loras=s.max_loras,
        max_cpu_loras=s.max_cpu_loras,
        max_lora_rank=s.max_lora_rank,
    )
    engine, pg, gw = LocalEngine(opts), EmbeddedPostgres(run_dir / "postgres"), None
    try:
        engine.start()
        engine.wait_ready()
        assert engine.proc is not None
        stack = Stack(engine.url, models, engine_pid=engine.proc.pid)
        if "gateway" in s.paths:
            db_url = pg.start()
            upgrade(db_url)
            stack.admin_token = secrets.token_urlsafe(32)
            gw = procs.gateway(db_url, engine.url, procs.free_port(), 1, stack.admin_token, run_dir)
            gw.start()
            gw.wait_until(lambda b: httpx.get(b + "/readyz", timeout=2).status_code == 200)
            stack.gateway_url, stack.gateway_pid, stack.db_pid = gw.url, gw.pid, pg.pid()
        args.out.mkdir(parents=True, exist_ok=True)
        run(stack, s, args.out)
    finally:
        if gw is not None:
            gw.stop()
        engine.stop()
        pg.stop()
    print(f"wrote {args.out}/multi_lora.md", flush=True)


if __name__ == "__main__":
    main()
