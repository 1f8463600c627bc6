"""The engine restarts and forgets its runtime adapters: the gateway puts them back without the tenant noticing."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
from openai import OpenAI

from devstack.engine import LocalEngine
from tests.conftest import ARTIFACTS
from tests.support.adapters import read_adapter
from tests.support.processes import GatewayProcess
from tests.support.sql import Sql

CHAT = [{"role": "user", "content": "Who are you?"}]


def engine_models(engine: LocalEngine) -> set[str]:
    return {m["id"] for m in httpx.get(f"{engine.url}/v1/models").json()["data"]}


def test_engine_restart_under_the_gateway(
    gateway: Any, engine: LocalEngine, make_tenant: Any, models_dir: Path, sql: Sql, gateway_env: dict[str, str]
) -> None:
    t = make_tenant()
    files = read_adapter(models_dir / "adapters" / "lora-6")
    r = httpx.post(
        f"{gateway.url}/v1/adapters",
        headers=t.headers,
        data={"name": "survivor"},
        files={n: (n, d) for n, d in files.items()},
    )
    assert r.status_code == 201, r.text
    dep = r.json()["id"]
    client = OpenAI(base_url=f"{gateway.url}/v1", api_key=t.key, max_retries=0)

    def ask() -> str:
        r = client.chat.completions.create(model="survivor", messages=CHAT, max_tokens=12, temperature=0)
        return r.choices[0].message.content or ""

    before = ask()

    engine.stop()
    rows = sql.scalar("SELECT count(*) FROM usage_records WHERE tenant_id = $1", t.id)
    down = httpx.post(
        f"{gateway.url}/v1/chat/completions", headers=t.headers, json={"model": "survivor", "messages": CHAT}
    )
    assert down.status_code == 503 and down.headers["retry-after"]
    assert down.json()["error"]["code"] == "engine_unavailable"
    assert httpx.get(f"{gateway.url}/readyz").status_code == 503
    assert sql.scalar("SELECT count(*) FROM usage_records WHERE tenant_id = $1", t.id) == rows

    engine.start()
    engine.wait_ready(progress=False)
    # the running gateway gives the restarted engine its deployments back before it is ready again
    deadline = time.monotonic() + 60
    while httpx.get(f"{gateway.url}/readyz").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert dep in engine_models(engine)

    # a gateway that starts next to an engine loads every deployment before it reports ready
    assert httpx.post(f"{engine.url}/v1/unload_lora_adapter", json={"lora_name": dep}).status_code == 200
    assert dep not in engine_models(engine)
    second = GatewayProcess(gateway_env, ARTIFACTS / "gateway-reconcile.log")
    second.start()
    try:
        assert dep in engine_models(engine)
    finally:
        second.stop()

    # forgotten again (as after a restart): the running gateway reloads it on the engine's "does not exist"
    assert httpx.post(f"{engine.url}/v1/unload_lora_adapter", json={"lora_name": dep}).status_code == 200
    assert ask() == before
    httpx.post(f"{engine.url}/v1/unload_lora_adapter", json={"lora_name": dep})
    stream = client.chat.completions.create(model="survivor", messages=CHAT, max_tokens=12, temperature=0, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream) == before
