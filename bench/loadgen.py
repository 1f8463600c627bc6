"""A lean HTTP/1.1 load generator for SSE streams: time to first token and total, per request.

    python -m bench.loadgen --url http://127.0.0.1:8000/v1/chat/completions --key sk-… -c 64 -d 10
    python -m bench.loadgen --url … --rate 200 -d 10     # open loop: 200 requests/s whatever the answers do

One process, one core, raw asyncio sockets (uvloop when installed), one keep-alive connection per
concurrent client. Prints one JSON object: counts, errors, latency percentiles (ms) and its own CPU seconds,
so a report can show that the load generator did not starve what it measured. wrk measures the
closed-loop non-streaming runs; it cannot see the first token of a stream, and it keeps a closed loop: the
open-loop runs at a fixed offered rate (--rate) use this one for both modes.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import resource
import time
from collections.abc import Iterator
from functools import partial
from urllib.parse import urlsplit

TIMEOUT_S = 10.0  # as wrk's --timeout: a request slower than this counts as an error
# An idle keep-alive connection is not reused after this long: servers close idle ones (uvicorn after 5 s), and
# a request sent on a closed one fails without the target being at fault. Clients expire them first (httpx: 5 s).
IDLE_EXPIRY_S = 4.0


def _stamp(into: list[float]) -> None:
    into.append(time.perf_counter())


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p90": float("nan"), "p99": float("nan")}
    s = sorted(values)

    def at(q: float) -> float:
        return s[min(len(s) - 1, int(q * len(s)))]

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99)}


class Stats:
    def __init__(self) -> None:
        self.ttft: list[float] = []
        self.total: list[float] = []
        self.ok = 0
        self.errors = 0
        self.all_requests = 0  # warm-up included: CPU per request is measured over the whole run
        self.statuses: dict[int, int] = {}
        self.failures: dict[str, int] = {}  # requests that got no HTTP answer, by what went wrong

    def failed(self, exc: BaseException) -> None:
        self.errors += 1
        what = f"{type(exc).__name__}: {exc}"[:80]
        self.failures[what] = self.failures.get(what, 0) + 1


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str], on_data: object) -> bytes:
    """Read a whole response body (chunked or content-length); call on_data() at the first data bytes."""
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
        if callable(on_data):
            on_data()
        return body
    parts = []
    first = True
    while True:
        size = int((await reader.readline()).split(b";")[0], 16)
        if size == 0:
            await reader.readline()
            return b"".join(parts)
        data = await reader.readexactly(size + 2)
        if first and (b'"content"' in data or b'"text"' in data):
            if callable(on_data):
                on_data()
            first = False
        parts.append(data[:-2])


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, dict[str, str], float | None, float]:
    """Send one request, read its whole response: (status, headers, first-data time or None, end time)."""
    first: list[float] = []
    writer.write(request)
    status_line = await asyncio.wait_for(reader.readline(), TIMEOUT_S)
    if not status_line:
        raise ConnectionError("closed")
    status = int(status_line.split(b" ", 2)[1])
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    await asyncio.wait_for(_read_body(reader, headers, partial(_stamp, first)), TIMEOUT_S)
    return status, headers, (first[0] if first else None), time.perf_counter()


def _count(stats: Stats, status: int, t0: float, first: float | None, t1: float) -> None:
    stats.statuses[status] = stats.statuses.get(status, 0) + 1
    if status != 200:
        stats.errors += 1
        return
    stats.ok += 1
    stats.total.append((t1 - t0) * 1000)
    stats.ttft.append(((first or t1) - t0) * 1000)


_Errors = (OSError, ValueError, asyncio.IncompleteReadError, ConnectionError, TimeoutError)


async def _client(
    host: str, port: int, requests: Iterator[bytes], stats: Stats, measure_from: float, until: float
) -> None:
    """Closed loop: one connection, the next request as soon as the last answer is read."""
    reader = writer = None
    while time.perf_counter() < until:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            assert reader is not None
            t0 = time.perf_counter()
            status, headers, first, t1 = await _exchange(reader, writer, next(requests))
            if headers.get("connection", "").lower() == "close":
                writer.close()
                writer = None
            stats.all_requests += 1
            if t0 >= measure_from:
                _count(stats, status, t0, first, t1)
        except _Errors as exc:
            if time.perf_counter() >= measure_from:
                stats.failed(exc)
            if writer is not None:
                writer.close()
            writer = None
            await asyncio.sleep(0.01)
    if writer is not None:
        writer.close()


class _OpenLoop:
    """Open loop at a fixed offered rate: request i is due at start + i / rate whether or not earlier answers
    came back (so a slow target cannot slow the load down), on a pool of keep-alive connections that grows
    when all are busy. Latency counts from when the request was due, not from when it was sent: waiting for
    a connection or for the loop is the target's fault too (no coordinated omission)."""

    def __init__(self, host: str, port: int, requests: Iterator[bytes], stats: Stats, measure_from: float) -> None:
        self.host, self.port, self.requests, self.stats = host, port, requests, stats
        self.measure_from = measure_from
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []  # the last: idle since
        self.in_flight = 0
        self.peak_in_flight = 0

    async def run(self, rate: float, until: float) -> None:
        tasks: set[asyncio.Task[None]] = set()
        due = time.perf_counter()
        while due < until:
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            task = asyncio.create_task(self._one(due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            due += 1.0 / rate
        if tasks:
            await asyncio.gather(*tasks)
        for _, writer, _ in self.idle:
            writer.close()

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The most recently used idle connection that the server cannot have closed yet, else a new one."""
        while self.idle:
            reader, writer, since = self.idle.pop()
            if not reader.at_eof() and time.perf_counter() - since < IDLE_EXPIRY_S:
                return reader, writer
            writer.close()
        return await asyncio.open_connection(self.host, self.port)

    async def _one(self, due: float) -> None:
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        conn = None
        try:
            conn = await self._connection()
            status, headers, first, t1 = await _exchange(*conn, next(self.requests))
            self.stats.all_requests += 1
            if due >= self.measure_from:
                _count(self.stats, status, due, first, t1)
            if headers.get("connection", "").lower() != "close":
                self.idle.append((*conn, time.perf_counter()))
                conn = None
        except _Errors as exc:
            if due >= self.measure_from:
                self.stats.failed(exc)
        finally:
            self.in_flight -= 1
            if conn is not None:
                conn[1].close()


async def run(
    url: str,
    key: str | None,
    body: bytes,
    concurrency: int,
    duration: float,
    warmup: float,
    models: list[str] | None = None,
    rate: float | None = None,
) -> dict:
    """Closed-loop load from `concurrency` clients, or open-loop load at `rate` requests/s; with `models`, the
    body's "model" rotates over them, one request after another."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    auth = f"authorization: Bearer {key}\r\n".encode() if key else b""
    bodies = [json.dumps(json.loads(body) | {"model": m}).encode() for m in models] if models else [body]
    requests = itertools.cycle(
        [
            f"POST {parts.path} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n".encode()
            + auth
            + f"content-length: {len(b)}\r\n\r\n".encode()
            + b
            for b in bodies
        ]
    )
    stats = Stats()
    start = time.perf_counter()
    measure_from = start + warmup
    until = measure_from + duration
    peak = concurrency
    if rate:
        loop = _OpenLoop(host, port, requests, stats, measure_from)
        await loop.run(rate, until)
        peak = loop.peak_in_flight
    else:
        await asyncio.gather(*(_client(host, port, requests, stats, measure_from, until) for _ in range(concurrency)))
    elapsed = time.perf_counter() - measure_from
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "requests": stats.ok,
        "all_requests": stats.all_requests,
        "errors": stats.errors,
        "statuses": stats.statuses,
        "failures": stats.failures,
        "seconds": elapsed,
        "rps": stats.ok / elapsed,
        "ttft_ms": percentiles(stats.ttft),
        "total_ms": percentiles(stats.total),
        "loadgen_cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_in_flight": peak,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--key")
    p.add_argument("--body", required=True, help="the JSON request body")
    p.add_argument("-c", "--concurrency", type=int, default=16, help="closed loop: this many clients")
    p.add_argument("--rate", type=float, help="open loop instead: requests per second, due at fixed intervals")
    p.add_argument("-d", "--duration", type=float, default=10.0, help="measured seconds")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of load before measuring")
    p.add_argument("--models", help="comma-separated model names: requests rotate over them")
    args = p.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    models = args.models.split(",") if args.models else None
    body = args.body.encode()
    result = asyncio.run(run(args.url, args.key, body, args.concurrency, args.duration, args.warmup, models, args.rate))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
