"""Usage-write path: durable usage rows per second through UsageWriter's group commit, by concurrency.

    python -m bench.usage_writes              # concurrency 1, 16, 64, 256; writes bench/results/usage_writes.md
    python -m bench.usage_writes --smoke --out /tmp/x

Drives gateway/usage/writer.py's UsageWriter directly (no HTTP) against an embedded PostgreSQL at its
defaults (synchronous_commit on), with billing's charge of each row in the same commit, as in the gateway
(one tenant, whose ledger grows by every row written). N concurrent callers each await record(row) in a loop,
as N in-flight requests would: record() returns only once the row is committed. Reports committed rows/s, the latency of
record() (p50/p99), the batch sizes the group commit formed, CPU per 1,000 rows, and checks the no-loss
guarantee: every acknowledged row is in the table, and no row is there twice.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

import psutil
import sqlalchemy as sa

from bench.procs import ROOT
from billing import ledger
from billing.ledger import AccountDefaults
from gateway import ids
from gateway.db import create_engine, create_pool
from gateway.settings import DatabaseSettings
from gateway.timeutil import utcnow
from gateway.usage.models import UsageStatus, usage_row
from gateway.usage.writer import UsageWriter


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


async def _seed(engine: Any) -> tuple[str, str]:
    tenant, key = ids.tenant_id(), ids.key_id()
    async with engine.begin() as conn:
        await conn.execute(
            sa.text("INSERT INTO tenants (id, name, created_at) VALUES (:i, :n, now())"), {"i": tenant, "n": tenant}
        )
        await conn.execute(
            sa.text(
                "INSERT INTO api_keys (id, tenant_id, name, prefix, key_hash, created_at) "
                "VALUES (:i, :t, 'bench', 'sk-bench', :h, now())"
            ),
            {"i": key, "t": tenant, "h": key.ljust(64, "0")},
        )
    return tenant, key


async def level(engine: Any, pool: Any, tenant: str, key: str, concurrency: int, seconds: float) -> dict[str, Any]:
    defaults = AccountDefaults("postpaid", 0, "usd")
    batches: list[int] = []  # each commit's size: the group commit's effect
    writer = UsageWriter(
        pool,
        on_commit=lambda conn, rows: ledger.charge_usage(conn, rows, defaults),
        observe=lambda seconds, items: batches.append(items),
    )
    prefix = f"req_c{concurrency}_{ids.new_id('', 6)}_"
    latencies: list[float] = []
    acked: list[str] = []
    deadline = time.perf_counter() + seconds
    proc = psutil.Process()
    cpu0 = sum(proc.cpu_times()[:2])

    async def caller(n: int) -> None:
        i = 0
        while time.perf_counter() < deadline:
            now = utcnow()
            rid = f"{prefix}{n}_{i}"
            row = usage_row(
                request_id=rid, tenant_id=tenant, api_key_id=key, model="tiny-base", base_model="tiny-base",
                adapter_id=None, endpoint="/v1/chat/completions", stream=False, prompt_tokens=60,
                completion_tokens=16, status=UsageStatus.OK, http_status=200, started_at=now, finished_at=now,
            )  # fmt: skip
            t0 = time.perf_counter()
            await writer.record(row)
            latencies.append((time.perf_counter() - t0) * 1000)
            acked.append(rid)
            i += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(caller(n) for n in range(concurrency)))
    elapsed = time.perf_counter() - t0
    cpu = sum(proc.cpu_times()[:2]) - cpu0
    await writer.stop()
    async with engine.connect() as conn:
        stored = (
            await conn.execute(
                sa.text("SELECT count(*), count(DISTINCT request_id) FROM usage_records WHERE request_id LIKE :p"),
                {"p": prefix + "%"},
            )
        ).one()
        charged, ledger_size = (
            await conn.execute(
                sa.text(
                    "SELECT count(*) FILTER (WHERE request_id LIKE :p), count(*) FROM ledger_entries "
                    "WHERE tenant_id = :t"
                ),
                {"p": prefix + "%", "t": tenant},
            )
        ).one()
    return {
        "concurrency": concurrency,
        "rows": len(acked),
        "seconds": elapsed,
        "rows_per_s": len(acked) / elapsed,
        "p50_ms": _pct(latencies, 0.50),
        "p99_ms": _pct(latencies, 0.99),
        "batches": len(batches),
        "mean_batch": statistics.mean(batches) if batches else 0,
        "max_batch": max(batches, default=0),
        "cpu_per_1k_rows": cpu / max(1, len(acked)) * 1000,
        "stored": stored[0],
        "lost": len(acked) - stored[0],
        "duplicates": stored[0] - stored[1],
        "charged": charged,
        "ledger_entries": ledger_size,
    }


async def run(database_url: str, levels: list[int], seconds: float) -> list[dict[str, Any]]:
    settings = DatabaseSettings(url=database_url)
    engine = create_engine(settings)
    pool = await create_pool(settings)
    try:
        tenant, key = await _seed(engine)
        await level(engine, pool, tenant, key, 4, min(seconds, 0.5))  # warm the pool and the caches
        results = []
        for c in levels:
            r = await level(engine, pool, tenant, key, c, seconds)
            results.append(r)
            print(
                f"c={c:<4} {r['rows_per_s']:8.0f} rows/s  p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms  "
                f"mean batch {r['mean_batch']:6.1f}  lost {r['lost']}  dup {r['duplicates']}",
                flush=True,
            )
        return results
    finally:
        await pool.close()
        await engine.dispose()


def report(results: list[dict[str, Any]], settings: dict[str, Any]) -> str:
    lines = [
        "# Usage-write path: UsageWriter group commit",
        "",
        "Generated by `python -m bench.usage_writes`. Each caller awaits `UsageWriter.record(row)` in a loop; "
        "a row counts once record() returned, i.e. once it is committed (synchronous_commit on). "
        "`lost` = acknowledged rows missing from the table afterwards; `dup` = rows stored twice.",
        "",
        "| concurrent callers | committed rows/s | record() p50 ms | p99 ms | commits | mean rows/commit | "
        "max rows/commit | CPU s / 1k rows (gateway side) | lost | dup | charged | tenant's ledger entries after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['concurrency']} | {r['rows_per_s']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['batches']} | "
            f"{r['mean_batch']:.1f} | {r['max_batch']} | {r['cpu_per_1k_rows']:.2f} | {r['lost']} | "
            f"{r['duplicates']} | {r['charged']} | {r['ledger_entries']} |"
        )
    lines += ["", "```json", json.dumps(settings, indent=2), "```", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="one level (16), one second")
    p.add_argument("--levels", default="1,16,64,256")
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--database-url", help="an empty, migrated database; default: a new embedded PostgreSQL")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = p.parse_args()
    if args.smoke:
        args.levels, args.duration = "16", 1.0
    levels = [int(x) for x in args.levels.split(",")]
    pg = None
    url = args.database_url
    if not url:
        from devstack.postgres import EmbeddedPostgres
        from gateway.migrate import upgrade

        pg = EmbeddedPostgres(ROOT / ".data" / "bench" / f"usage-{time.strftime('%Y%m%d-%H%M%S')}" / "postgres")
        url = pg.start()
        upgrade(url)
    try:
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        results = asyncio.run(run(url, levels, args.duration))
    finally:
        if pg is not None:
            pg.stop()
    from bench.procs import machine

    settings = {"levels": levels, "duration_s": args.duration, "machine": machine(), "writer": "UsageWriter defaults"}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "usage_writes.json").write_text(json.dumps({"settings": settings, "results": results}, indent=1))
    (args.out / "usage_writes.md").write_text(report(results, settings))
    print(f"wrote {args.out}/usage_writes.md", flush=True)


if __name__ == "__main__":
    main()
