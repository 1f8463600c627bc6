"""Processes a benchmark runs and watches: the mock upstream, the gateway, LiteLLM; their CPU and memory."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
BENCH_VENV = ROOT / ".data" / "bench-venv"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree(pid: int) -> list[psutil.Process]:
    """The process and all its descendants that are still alive."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of the processes under `pids`, including their children that have exited
    (reaped: in the parent's children_* times), so that a process ending between two readings (a PostgreSQL
    autovacuum worker, a backend) does not take its CPU out of the difference."""
    total = 0.0
    for pid in pids:
        for p in tree(pid):
            try:
                t = p.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
            except psutil.NoSuchProcess:
                pass
    return total


class RssSampler:
    """Samples resident memory of named process trees every `period` seconds; keeps the peaks."""

    def __init__(self, period: float = 0.2) -> None:
        self.period = period
        self.trees: dict[str, int] = {}
        self.peak_process: dict[str, int] = {}  # the largest single process (one worker), bytes
        self.peak_tree: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def watch(self, name: str, pid: int) -> None:
        self.trees[name] = pid

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            for name, pid in list(self.trees.items()):
                sizes = []
                for p in tree(pid):
                    with contextlib.suppress(psutil.NoSuchProcess):
                        sizes.append(p.memory_info().rss)
                if sizes:
                    self.peak_process[name] = max(self.peak_process.get(name, 0), max(sizes))
                    self.peak_tree[name] = max(self.peak_tree.get(name, 0), sum(sizes))


class Service:
    """One server process with its log file; stop() ends it and its workers."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], port: int, log_dir: Path) -> None:
        self.name, self.argv, self.port = name, argv, port
        self.env = {**os.environ, **env}
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen(
            self.argv, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_until(self, ok: object, timeout_s: float = 120) -> float:
        """Poll `ok(base_url) -> bool` until true; return seconds since start()."""
        assert self.proc is not None and callable(ok)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log_path}")
            try:
                if ok(self.url):
                    return time.perf_counter() - self.started_at
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
        raise TimeoutError(f"{self.name} not ready after {timeout_s}s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)  # its own session: the workers go too
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def mock(port: int, latency_ms: float, tokens: int, log_dir: Path) -> Service:
    argv = [sys.executable, "-m", "bench.mock_upstream", "--port", str(port), "--latency-ms", str(latency_ms)]
    return Service("mock", [*argv, "--tokens", str(tokens)], {}, port, log_dir)


def gateway(database_url: str, engine_url: str, port: int, workers: int, admin_token: str, run_dir: Path) -> Service:
    env = {
        "DATABASE_URL": database_url,
        "ENGINE_URL": engine_url,
        "GATEWAY_ADMIN_TOKEN": admin_token,
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(port),
        "GATEWAY_WORKERS": str(workers),
        "GATEWAY_DATA_DIR": str(run_dir / "gateway-data"),
        "METRICS_PORT": "0",  # no Prometheus listener: nothing here scrapes the gateway, and no port to collide
        # no default tenant bounds (0: unlimited): the benchmarks set the limits they measure on their tenants
        **{f"TENANT_{name}": "0" for name in ("DEFAULT_RPM", "DEFAULT_TPM", "DEFAULT_MAX_CONCURRENT",
                                              "MAX_DEPLOYMENTS", "MAX_ADAPTER_BYTES", "UPLOADS_PER_MINUTE")},
    }  # fmt: skip
    return Service("gateway", [sys.executable, "-m", "gateway", "serve"], env, port, run_dir)


def floor(engine_url: str, port: int, workers: int, run_dir: Path) -> Service:
    """bench/floor_proxy.py on uvicorn, no access log: as the gateway is served (gateway/cli.py)."""
    argv = [sys.executable, "-m", "uvicorn", "bench.floor_proxy:app", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--workers", str(workers), "--no-access-log", "--log-level", "warning"]
    return Service("floor", argv, {"UPSTREAM": engine_url}, port, run_dir)


# LiteLLM's "Production Best Practices" page, minus what needs a database, Redis or Slack (none here).
LITELLM_CONFIG = """\
model_list:
  - model_name: tiny-base
    litellm_params:
      model: openai/tiny-base
      api_base: {api_base}
      api_key: none
general_settings:
  master_key: {master_key}
litellm_settings:
  set_verbose: false
  json_logs: true
  request_timeout: 600
"""
LITELLM_ENV = {"LITELLM_LOG": "ERROR", "LITELLM_MODE": "PRODUCTION"}


def litellm(engine_url: str, port: int, workers: int, master_key: str, run_dir: Path) -> Service:
    config = run_dir / "litellm.yaml"
    config.write_text(LITELLM_CONFIG.format(api_base=f"{engine_url}/v1", master_key=master_key))
    exe = str(BENCH_VENV / "bin" / "litellm")
    argv = [exe, "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", str(workers)]
    return Service("litellm", argv, LITELLM_ENV, port, run_dir)


def answers_chat(key: str, path: str = "/v1/chat/completions") -> object:
    """A readiness check that is a real served request: a 200 chat completion."""
    body = {"model": "tiny-base", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}

    def ok(base: str) -> bool:
        r = httpx.post(base + path, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=5)
        return r.status_code == 200

    return ok


def versions() -> dict[str, str]:
    """Versions of what was measured, for the report."""
    out = {"python": sys.version.split()[0]}
    for dist in ("litestar", "uvicorn", "uvloop", "httptools", "httpx", "sqlalchemy", "asyncpg", "psutil"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "-"
    py = BENCH_VENV / "bin" / "python"
    if py.exists():
        code = (
            "import json,importlib.metadata as m;"
            "print(json.dumps({d: m.version(d) for d in ('litellm','uvicorn','matplotlib','py-spy')}))"
        )
        try:
            found = json.loads(subprocess.run([str(py), "-c", code], capture_output=True, text=True).stdout)
            out.update({f"bench-venv {k}": v for k, v in found.items()})
        except (ValueError, OSError):
            pass
    try:
        out["wrk"] = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0]
    except OSError:
        out["wrk"] = "-"
    return out


def machine() -> dict[str, str]:
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "kernel": os.uname().release,
    }
