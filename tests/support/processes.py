"""Real services for the tests: embedded PostgreSQL, the vLLM engine, gateway processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GatewayProcess:
    """`python -m gateway serve` in its own process, as in production."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port, self.metrics_port = free_port(), free_port()
        self.env = {**os.environ, "METRICS_PORT": str(self.metrics_port), **env}
        self.env |= {"GATEWAY_PORT": str(self.port), "GATEWAY_HOST": "127.0.0.1"}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        """The Prometheus listener (its own port): {metrics_url}/metrics."""
        return f"http://127.0.0.1:{self.metrics_port}"

    def start(self, timeout_s: float = 60) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve"],
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}; see {self.log_path}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"gateway not ready; see {self.log_path}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class CpuWait:
    """Samples how long a process's main thread (a gateway's event loop) has waited for a CPU while runnable
    (Linux schedstat), a few times a second, in a thread of its own. On a shared machine a process can be
    denied the CPU for seconds; a test that asserts how soon it commits must allow for that time."""

    def __init__(self, pid: int, every_s: float = 0.25) -> None:
        self._path = Path(f"/proc/{pid}/task/{pid}/schedstat")
        self._every_s = every_s
        self.samples: list[tuple[float, float]] = []  # (monotonic time, seconds waited so far)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                waited = int(self._path.read_text().split()[1]) / 1e9
            except (OSError, IndexError, ValueError):
                return  # gone (or no schedstat here)
            self.samples.append((time.monotonic(), waited))
            self._stop.wait(self._every_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def had_cpu_for(self, seconds: float, before: float) -> float:
        """The latest sampled time t such that between t and `before` the process was not waiting for a CPU for
        at least `seconds` (it ran, or slept waiting for I/O): what it had to do by then it had time to do."""
        if not self.samples:
            return before - seconds
        end_wait = next((w for t, w in reversed(self.samples) if t <= before), self.samples[-1][1])
        for t, w in reversed(self.samples):
            if t <= before and (before - t) - (end_wait - w) >= seconds:
                return t
        return self.samples[0][0] - seconds  # never had that much: nothing before it counts


class CpuCap:
    """Caps processes at a share of one CPU with a cgroup (cgroup v1 `cpu` or v2; needs root) while open, then
    puts each one back in the group it came from.

    A test that must act while the engine is still generating caps the engine's model worker: on a machine that
    holds the test back for seconds, an uncapped engine finishes every stream first. Where no cgroup can be
    made (or no process is given), nothing is capped and `active` is False."""

    _HIERARCHIES = ((Path("/sys/fs/cgroup/cpu"), "cpu"), (Path("/sys/fs/cgroup"), ""))  # (mount, v1 controller)

    def __init__(self, pids: list[int], share: float) -> None:
        self.pids, self.share = pids, share
        self.path: Path | None = None
        self._origins: dict[int, Path] = {}

    @property
    def active(self) -> bool:
        return self.path is not None

    def __enter__(self) -> CpuCap:
        name = f"tests-cap-{os.getpid()}-{time.monotonic_ns()}"
        period, quota = 100_000, int(100_000 * self.share)
        for root, controller in self._HIERARCHIES if self.pids else ():
            group = root / name
            try:
                self._origins = {pid: root / _cgroup_of(pid, controller).lstrip("/") for pid in self.pids}
                group.mkdir()
            except (OSError, LookupError):
                continue
            try:
                if not (group / "cgroup.procs").exists():  # a plain folder, not a cgroup
                    raise OSError("not a cgroup")
                if controller:
                    (group / "cpu.cfs_period_us").write_text(str(period))
                    (group / "cpu.cfs_quota_us").write_text(str(quota))
                else:
                    (group / "cpu.max").write_text(f"{quota} {period}")
                for pid in self.pids:
                    (group / "cgroup.procs").write_text(str(pid))
            except OSError:
                self._release(group)
                continue
            self.path = group
            break
        return self

    def __exit__(self, *exc: object) -> None:
        if self.path is not None:
            self._release(self.path)
            self.path = None

    def _release(self, group: Path) -> None:
        """Put every process still in the group back where it came from, then remove the group."""
        if (group / "cgroup.procs").exists():
            for pid in map(int, (group / "cgroup.procs").read_text().split()):
                try:
                    (self._origins[pid] / "cgroup.procs").write_text(str(pid))
                except ProcessLookupError:
                    pass  # killed (by the test) and gone meanwhile
                except (OSError, KeyError) as exc:
                    warnings.warn(f"process {pid} stays CPU-capped in {group}: {exc}", stacklevel=2)
        for _ in range(50):  # a process killed just now can take a moment to leave the group
            try:
                group.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.1)
        warnings.warn(f"could not remove the cgroup {group}", stacklevel=2)


def _cgroup_of(pid: int, controller: str) -> str:
    """The path of `pid`'s cgroup in the hierarchy of `controller` (v1), or in the unified one ("")."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(",") if controller else controllers == "":
            return path
    raise LookupError(f"no {controller or 'unified'} cgroup for {pid}")
