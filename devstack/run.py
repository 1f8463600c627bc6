"""`make run`: the whole product on one machine: embedded PostgreSQL, local vLLM engine, gateway, demo tenant.

Whatever is configured is used instead: DATABASE_URL set → no embedded PostgreSQL; ENGINE_URL or ENGINE_URLS
set → no local engine. Ctrl-C stops everything this command started.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from devstack import tinymodel
from devstack.demo import TOKEN_FILE, answers, demo_columns, render
from devstack.engine import EngineOptions, LocalEngine
from devstack.postgres import EmbeddedPostgres
from devstack.seed import seed_demo
from gateway.cli import settings_or_exit
from gateway.migrate import upgrade
from gateway.settings import Settings


def step(message: str) -> None:
    print(f"==> {message}", flush=True)


def admin_token(data_dir: Path, settings: Settings) -> str:
    """GATEWAY_ADMIN_TOKEN if set, else the token of the last run, else a new one; written to the data folder
    in every case (mode 0600), where `make demo` in another terminal finds it."""
    path = data_dir / TOKEN_FILE
    if settings.admin.token is not None:
        token = settings.admin.token.get_secret_value()
    elif path.exists() and path.read_text().strip():
        token = path.read_text().strip()
    else:
        token = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    path.chmod(0o600)  # a file from an older run may have been made with a wider mode
    return token


def require_free(host: str, port: int, what: str, variable: str) -> None:
    """Fail early and clearly when a port is taken (an earlier `make run` still running, say)."""
    with socket.socket() as s:
        if s.connect_ex((host, port)) == 0:
            raise SystemExit(
                f"{host}:{port} is already in use, so the {what} cannot start there. "
                f"Stop whatever runs there, or set {variable} to another port."
            )


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
    settings = settings_or_exit()  # a wrong setting (say a short GATEWAY_ADMIN_TOKEN) is one line, not a traceback
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
        if not settings.engine.pool_urls():  # neither ENGINE_URL nor ENGINE_URLS: run one here
            port = int(os.environ.get("ENGINE_PORT", "8100"))
            require_free("127.0.0.1", port, "vLLM engine", "ENGINE_PORT")
            step(f"starting the vLLM engine on 127.0.0.1:{port} (about 30–60 s; log: {data_dir}/engine-{port}.log)")
            engine = LocalEngine(
                EngineOptions(model_dir=base, served_name=tinymodel.BASE_NAME, port=port, data_dir=data_dir,
                              max_lora_rank=settings.engine.max_lora_rank)
            )  # fmt: skip
            stack.append(engine)
            engine.start()
            engine.wait_ready()
            engine_url = engine.url
        if engine_url:
            env["ENGINE_URL"] = engine_url
        token = admin_token(data_dir, settings)
        env["GATEWAY_ADMIN_TOKEN"] = token

        gateway_url = f"http://{settings.server.host}:{settings.server.port}"
        require_free(settings.server.host, settings.server.port, "gateway", "GATEWAY_PORT")
        if settings.metrics.port:
            require_free(settings.metrics.host, settings.metrics.port, "gateway metrics", "METRICS_PORT")
        step(f"starting the gateway on {gateway_url}")
        gateway = subprocess.Popen([sys.executable, "-m", "gateway", "serve"], env=env)
        stack.append(gateway)
        wait_http(f"{gateway_url}/readyz", gateway)
        step("starting a fine-tuning worker (python -m gateway trainer)")
        stack.append(subprocess.Popen([sys.executable, "-m", "gateway", "trainer"], env=env))

        step("deploying the demo: two tenants, each uploading its own LoRA")
        state, keys = seed_demo(gateway_url, token, data_dir)
        columns = demo_columns(state, keys)
        step("asking the same questions of the base model and both tenants' adapters")
        print("\n" + render(["prompt", *(c.title for c in columns)], answers(gateway_url, columns)))
        print_banner(gateway_url, token, state, keys, settings.signup.mode)
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


def console_lines(url: str, signup_mode: str) -> str:
    """How a newcomer gets in: the console's address, and how an application is approved."""
    how = {
        "approval": f"apply there, then approve it on the dashboard ({url}/admin: sign in with the admin token,\n"
        "               Applications → Approve), or restart with SIGNUP_MODE=open make run",
        "open": "sign up there: accounts are active at once, with trial tokens (SIGNUP_MODE=open)",
        "closed": "sign-up is closed (SIGNUP_MODE=closed): create tenants with POST /admin/tenants",
    }[signup_mode]
    return f" Console     : {url}/console   (tenants sign up, deploy LoRAs, chat in the playground)\n" \
           f"               {how}\n Dashboard   : {url}/admin"  # fmt: skip


def print_banner(url: str, admin: str, state: dict[str, Any], keys: list[str], signup_mode: str = "approval") -> None:
    tenants = "\n".join(
        f" Tenant {i}    : {t['tenant_id']}  key {key}\n"
        f"                LoRA {t['adapter_name']!r}, deployment {t['adapter_id']}"
        for i, (t, key) in enumerate(zip(state["tenants"], keys, strict=True), start=1)
    )
    first, key = state["tenants"][0], keys[0]
    here = Path.cwd()
    exe = Path(sys.executable)  # the project's virtualenv: it has the openai package, a system python may not
    python = str(exe.relative_to(here)) if exe.is_relative_to(here) else str(exe)
    print(
        f"""
────────────────────────────────────────────────────────────────────────
 The gateway is running at {url}   (Ctrl-C stops everything)

 Admin token : {admin}
{console_lines(url, signup_mode)}
 Base model  : {state["base_model"]}
{tenants}

 Try it (tenant 1):
   curl {url}/v1/chat/completions \\
     -H "Authorization: Bearer {key}" -H "Content-Type: application/json" \\
     -d '{{"model": "{first["adapter_name"]}", "messages": [{{"role": "user", "content": "你是谁?"}}]}}'

   curl {url}/maas/deployment/{first["adapter_id"]}/chat/completions -H "Authorization: Bearer {key}" \\
     -H "Content-Type: application/json" -d '{{"messages": [{{"role": "user", "content": "Who are you?"}}]}}'

   OPENAI_BASE_URL={url}/v1 OPENAI_API_KEY={key} {python} -c "from openai import OpenAI; \\
print(OpenAI().chat.completions.create(model='{first["adapter_name"]}', \\
  messages=[{{'role': 'user', 'content': 'Who are you?'}}]).choices[0].message.content)"

 The table again: make demo
────────────────────────────────────────────────────────────────────────
""",
        flush=True,
    )


if __name__ == "__main__":
    main()
