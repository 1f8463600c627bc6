"""Deploy latency: adapter upload → ready (the 201) → first streamed token, over N uploads.

    python -m bench.deploy_latency --admin-token "$(cat .data/admin-token)" -n 20

Each upload has distinct bytes (the config's alpha differs), so every one goes through the whole path:
validate, store, load into the engine. Prints a markdown table; --out writes it to a file too.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import time
from pathlib import Path

import httpx


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(gateway: str, admin_token: str, adapter: Path, n: int) -> dict[str, list[float]]:
    admin = httpx.Client(base_url=gateway, headers={"Authorization": f"Bearer {admin_token}"}, timeout=60)
    tenant = admin.post("/admin/tenants", json={"name": f"bench-{secrets.token_hex(4)}"}).json()["id"]
    key = admin.post(f"/admin/tenants/{tenant}/keys", json={"name": "bench"}).json()["key"]
    config = json.loads((adapter / "adapter_config.json").read_text())
    weights = (adapter / "adapter_model.safetensors").read_bytes()
    client = httpx.Client(base_url=gateway, headers={"Authorization": f"Bearer {key}"}, timeout=60)
    ready, first_token = [], []
    for i in range(n):
        config["lora_alpha"] = 16 + i  # distinct content → the full path every time
        files = {
            "adapter_config.json": ("adapter_config.json", json.dumps(config).encode()),
            "adapter_model.safetensors": ("adapter_model.safetensors", weights),
        }
        t0 = time.perf_counter()
        r = client.post("/v1/adapters", data={"name": f"bench-{i}"}, files=files)
        r.raise_for_status()
        assert r.json()["status"] == "ready", r.json()
        ready.append(time.perf_counter() - t0)
        body = {
            "model": r.json()["id"],
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 4,
            "stream": True,
        }
        with client.stream("POST", "/v1/chat/completions", json=body) as s:
            for line in s.iter_lines():
                if line.startswith("data: ") and '"content"' in line:
                    break
        first_token.append(time.perf_counter() - t0)
    return {"upload → ready": ready, "upload → first token": first_token}


def report(results: dict[str, list[float]], n: int, adapter_bytes: int) -> str:
    lines = [
        f"Deploy latency over {n} uploads ({adapter_bytes / 1024:.0f} KiB adapter), milliseconds",
        "",
        "| span | p50 | p99 | max |",
        "|---|---|---|---|",
    ]
    for span, values in results.items():
        ms = [v * 1000 for v in values]
        lines.append(f"| {span} | {statistics.median(ms):.1f} | {percentile(ms, 0.99):.1f} | {max(ms):.1f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gateway", default="http://127.0.0.1:8000")
    p.add_argument("--admin-token", required=True)
    p.add_argument("--adapter", type=Path, default=Path(".data/models/adapters/lora-1"))
    p.add_argument("-n", type=int, default=20)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    results = run(args.gateway, args.admin_token, args.adapter, args.n)
    size = sum(f.stat().st_size for f in args.adapter.iterdir() if f.name.startswith("adapter_"))
    text = report(results, args.n, size)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
