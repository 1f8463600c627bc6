"""`make run`: the whole product on one machine: embedded PostgreSQL, local vLLM engine, gateway, demo tenant.

Whatever is configured is used instead: DATABASE_URL set → no embedded PostgreSQL; ENGINE_URL set → no local
engine. Ctrl-C stops everything this command started.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from devstack import tinymodel
from devstack.engine import EngineOptions, LocalEngine
from devstack.postgres import EmbeddedPostgres
from devstack.seed import seed_demo
from gateway.migrate import upgrade
from gateway.settings import Settings


def step(message: str) -> None:
    print(f"==> {message}", flush=True)


def admin_token(data_dir: Path, settings: Settings) -> str:
    if settings.admin.token is not None:
        return settings.admin.token.get_secret_value()
    path = data_dir / "admin-token"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(24))
        path.chmod(0o600)
    return path.read_text().strip()


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the gateway exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{url} did not become ready in {timeout_s:.0f}s")


def main() -> None:
    settings = Settings()
    data_dir = settings.storage.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, GATEWAY_DATA_DIR=str(data_dir))
    stack: list[object] = []

    def shutdown(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, shutdown)
    try:
        step("models")
        base = tinymodel.ensure_built(data_dir / "models")

        db_url = settings.database.url
        if not db_url:
            step(f"starting embedded PostgreSQL in {data_dir / 'postgres'}")
            pg = EmbeddedPostgres(data_dir / "postgres")
            db_url = pg.start()
            stack.append(pg)
        env["DATABASE_URL"] = db_url
        step("migrating the database")
        upgrade(db_url)

        engine_url = settings.engine.url
        if not engine_url:
            port = int(os.environ.get("ENGINE_PORT", "8100"))
            step(f"starting the vLLM engine on 127.0.0.1:{port} (about 30–60 s; log: {data_dir}/engine-{port}.log)")
            engine = LocalEngine(
                EngineOptions(model_dir=base, served_name=tinymodel.BASE_NAME, port=port, data_dir=data_dir,
                              max_lora_rank=settings.engine.max_lora_rank)
            )  # fmt: skip
            stack.append(engine)
            engine.start()
            engine.wait_ready()
            engine_url = engine.url
        env["ENGINE_URL"] = engine_url
        token = admin_token(data_dir, settings)
        env["GATEWAY_ADMIN_TOKEN"] = token

        gateway_url = f"http://{settings.server.host}:{settings.server.port}"
        step(f"starting the gateway on {gateway_url}")
        gateway = subprocess.Popen([sys.executable, "-m", "gateway", "serve"], env=env)
        stack.append(gateway)
        wait_http(f"{gateway_url}/readyz", gateway)

        step("creating the demo tenant")
        demo = seed_demo(gateway_url, token, data_dir)
        print_banner(gateway_url, token, demo)
        gateway.wait()
    except KeyboardInterrupt:
        print("\nstopping …", flush=True)
    finally:
        for thing in reversed(stack):
            if isinstance(thing, subprocess.Popen):
                thing.terminate()
                try:
                    thing.wait(15)
                except subprocess.TimeoutExpired:
                    thing.kill()
            else:
                thing.stop()  # type: ignore[attr-defined]


def print_banner(url: str, admin: str, demo: dict[str, str]) -> None:
    key, model = demo["key"], demo["model"]
    print(
        f"""
────────────────────────────────────────────────────────────────────────
 The gateway is running at {url}   (Ctrl-C stops everything)

 Admin token : {admin}
 Demo tenant : {demo["tenant_id"]}
 Demo key    : {key}
 Models      : {demo["base_model"]} (base), {model} (the demo tenant's adapter, deployment {demo["adapter_id"]})

 Try it:
   curl {url}/v1/chat/completions \\
     -H "Authorization: Bearer {key}" -H "Content-Type: application/json" \\
     -d '{{"model": "{model}", "messages": [{{"role": "user", "content": "Who are you?"}}], "max_tokens": 32}}'

   OPENAI_BASE_URL={url}/v1 OPENAI_API_KEY={key} python -c "from openai import OpenAI; \\
print(OpenAI().chat.completions.create(model='{model}', \\
  messages=[{{'role': 'user', 'content': 'hi'}}]).choices[0].message.content)"
────────────────────────────────────────────────────────────────────────
""",
        flush=True,
    )


if __name__ == "__main__":
    main()
