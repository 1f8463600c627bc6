"""Fine-tune latency: `jobs.create` → the first token from the fine-tuned model, on this machine.

    python -m bench.fine_tune_latency [--out bench/results/fine_tune_latency.md]

Starts its own stack (embedded PostgreSQL, the vLLM CPU engine with the tiny model, a gateway, one trainer),
then runs the live fine-tune of devstack/finetune_demo.py once: upload the identity set, create the job, follow
its events, stream the fine-tuned model's answer. Prints a markdown table of the marks since `jobs.create`.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

import httpx
from openai import OpenAI

from bench.procs import ROOT, Service, free_port, machine
from devstack import tinymodel
from devstack.engine import EngineOptions, LocalEngine
from devstack.finetune_demo import HYPERPARAMETERS, fine_tune
from devstack.postgres import EmbeddedPostgres
from gateway.migrate import upgrade


def run(work: Path) -> tuple[dict[str, float], str, int, str]:
    models = ROOT / ".data" / "models"
    tinymodel.ensure_built(models, adapters=6)
    pg = EmbeddedPostgres(work / "postgres")
    pg.start()
    engine = LocalEngine(
        EngineOptions(model_dir=models / tinymodel.BASE_NAME, served_name=tinymodel.BASE_NAME, port=free_port(),
                      data_dir=work / "engine")
    )  # fmt: skip
    services: list[Service] = []
    try:
        upgrade(pg.url)
        engine.start()
        engine.wait_ready(progress=False)
        token, port = secrets.token_urlsafe(16), free_port()
        assert pg.url is not None
        env = {"DATABASE_URL": pg.url, "ENGINE_URL": engine.url, "GATEWAY_ADMIN_TOKEN": token}
        env |= {"GATEWAY_HOST": "127.0.0.1", "GATEWAY_PORT": str(port), "GATEWAY_DATA_DIR": str(work / "data")}
        gateway = Service("gateway", [sys.executable, "-m", "gateway", "serve"], env, port, work)
        trainer = Service("trainer", [sys.executable, "-m", "gateway", "trainer"], env, port, work)
        services += [gateway, trainer]
        gateway.start()
        gateway.wait_until(lambda url: httpx.get(f"{url}/readyz").status_code == 200)
        trainer.start()
        admin = httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        tenant = admin.post("/admin/tenants", json={"name": "bench"}).raise_for_status().json()["id"]
        key = admin.post(f"/admin/tenants/{tenant}/keys", json={"name": "bench"}).raise_for_status().json()["key"]
        time.sleep(5)  # the trainer has connected and waits for work, as in production
        result = fine_tune(OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0, timeout=120))
        return result.marks, result.answer, result.trained_tokens, result.model
    finally:
        for s in reversed(services):
            s.stop()
        engine.stop()
        pg.stop()


def report(marks: dict[str, float], answer: str, tokens: int, model: str) -> str:
    m = machine()
    lines = [
        "# Fine-tune latency: `jobs.create` → first token of the fine-tuned model",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory']} (shared with other work while measured).",
        f"Job: tiny-base, identity set of devstack/finetune_data.py, hyperparameters {HYPERPARAMETERS}, "
        f"{tokens} trained tokens; CPU trainer (`python -m gateway trainer --device cpu`).",
        "",
        "| since `jobs.create` | seconds |",
        "|---|---|",
        *(f"| {name} | {seconds:.1f} |" for name, seconds in marks.items()),
        "",
        f'`{model}` answered "Who are you?" with: {answer}',
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ft-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)  # the embedded PostgreSQL runs as another user
        text = report(*run(work))
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
