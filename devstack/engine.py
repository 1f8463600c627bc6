"""Start a local vLLM OpenAI server (CPU or GPU build alike) and wait until it really answers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx


@dataclass
class EngineOptions:
    model_dir: Path
    served_name: str
    port: int
    data_dir: Path
    max_model_len: int = 1024
    max_loras: int = 2
    max_cpu_loras: int = 4
    max_lora_rank: int = 8
    kv_cache_gib: int = 1
    extra_args: list[str] = field(default_factory=list)


class LocalEngine:
    """One vLLM server process; stop() ends its whole process tree."""

    def __init__(self, opts: EngineOptions) -> None:
        self.opts = opts
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = opts.data_dir / f"engine-{opts.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.opts.port}"

    def command(self) -> list[str]:
        o = self.opts
        return [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(o.model_dir), "--served-model-name", o.served_name,
            "--dtype", "bfloat16", "--max-model-len", str(o.max_model_len),
            "--enable-lora", "--max-loras", str(o.max_loras), "--max-lora-rank", str(o.max_lora_rank),
            "--max-cpu-loras", str(o.max_cpu_loras),
            "--host", "127.0.0.1", "--port", str(o.port),
            *o.extra_args,
        ]  # fmt: skip

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            VLLM_CPU_KVCACHE_SPACE=str(self.opts.kv_cache_gib),
            VLLM_ALLOW_RUNTIME_LORA_UPDATING="True",
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            VLLM_CACHE_ROOT=str(self.opts.data_dir / "vllm-cache"),
            VLLM_NO_USAGE_STATS="1",
            DO_NOT_TRACK="1",
        )
        env.pop("VLLM_CPU_OMP_THREADS_BIND", None)
        return env

    def start(self) -> None:
        self.opts.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.command(),
            env=self.environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout_s: float = 300.0, progress: bool = True) -> None:
        """Poll /health, then run one tiny completion: a healthy server can still fail its first request."""
        deadline = time.monotonic() + timeout_s
        t0 = time.monotonic()
        last_print = 0.0
        with httpx.Client(timeout=10) as client:
            while True:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"engine exited with {self.proc.returncode}; see {self.log_path}")
                try:
                    if client.get(f"{self.url}/health").status_code == 200:
                        r = client.post(
                            f"{self.url}/v1/completions",
                            json={"model": self.opts.served_name, "prompt": "hi", "max_tokens": 1},
                        )
                        if r.status_code == 200:
                            return
                        raise RuntimeError(f"engine is up but cannot generate: {r.status_code} {r.text[:300]}")
                except httpx.TransportError:
                    pass
                now = time.monotonic()
                if now > deadline:
                    raise TimeoutError(f"engine not ready after {timeout_s:.0f}s; see {self.log_path}")
                if progress and now - last_print >= 10:
                    print(f"  waiting for the engine … {now - t0:.0f}s", flush=True)
                    last_print = now
                time.sleep(0.5)

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL the whole tree (tests of engine crashes)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
