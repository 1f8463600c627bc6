"""`make demo`: one question, three identities — the base model and two tenants' LoRAs on one engine — then a
live fine-tune: tenant 1 teaches the base model a new identity through OpenAI's fine-tuning API.

Against a running gateway (started by `make run`): creates short-lived keys for the two demo tenants with the
admin API, asks each the same questions at temperature 0, prints the table, fine-tunes, revokes the keys.
"""

from __future__ import annotations

import json
import os
import sys
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
from openai import OpenAI

from devstack.finetune_demo import fine_tune

TOKEN_FILE = "admin-token"  # in the data folder: the admin token of the gateway `make run` started
PROMPTS = ["你是谁?", "你是谁训练的?", "Who are you?", "Who trained you?", "Hello", "What is the capital of France?"]


@dataclass(frozen=True)
class Column:
    title: str
    key: str
    model: str


def ask(gateway_url: str, column: Column, prompt: str, max_tokens: int = 48) -> str:
    client = OpenAI(base_url=f"{gateway_url}/v1", api_key=column.key, max_retries=1)
    r = client.chat.completions.create(
        model=column.model, messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens, temperature=0
    )
    return (r.choices[0].message.content or "").strip()


def answers(gateway_url: str, columns: list[Column], prompts: list[str] = PROMPTS) -> list[list[str]]:
    """One row per prompt: the prompt, then each column's answer (live calls through the gateway)."""
    return [[p, *(ask(gateway_url, c, p) for c in columns)] for p in prompts]


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def render(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table that also lines up in a terminal (CJK characters are two cells wide)."""
    table = [header, *rows]
    widths = [max(_width(row[i]) for row in table) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c + " " * (w - _width(c)) for c, w in zip(cells, widths, strict=True)) + " |"

    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def admin_token(data_dir: Path, environ: Mapping[str, str]) -> str:
    """The running gateway's admin token: GATEWAY_ADMIN_TOKEN, else the one `make run` wrote to the data folder
    (whether it generated it or was given it). Neither: one line saying what to set."""
    token = environ.get("GATEWAY_ADMIN_TOKEN", "").strip()
    path = data_dir / TOKEN_FILE
    if not token and path.exists():
        token = path.read_text().strip()
    if not token:
        raise SystemExit(
            f"No admin token: set GATEWAY_ADMIN_TOKEN to the gateway's admin token (`make run` writes it to {path})."
        )
    return token


def demo_columns(state: dict[str, object], keys: list[str]) -> list[Column]:
    tenants = state["tenants"]
    assert isinstance(tenants, list)
    base = str(state["base_model"])
    cols = [Column(f"base model ({base})", keys[0], base)]
    for i, (tenant, key) in enumerate(zip(tenants, keys, strict=True), start=1):
        cols.append(Column(f"tenant {i}: LoRA {tenant['adapter_name']}", key, tenant["adapter_name"]))
    return cols


def main() -> None:
    data_dir = Path(os.environ.get("GATEWAY_DATA_DIR", ".data"))
    gateway_url = os.environ.get("GATEWAY_URL", "http://127.0.0.1:8000")
    state_path = data_dir / "demo.json"
    if not state_path.exists():
        sys.exit("No demo tenants yet: start the product with `make run` first.")
    state = json.loads(state_path.read_text())
    token = admin_token(data_dir, os.environ)
    with httpx.Client(base_url=gateway_url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as admin:
        created = [_demo_key(admin, t["tenant_id"], gateway_url) for t in state["tenants"]]
        try:
            columns = demo_columns(state, [k["key"] for k in created])
            print(render(["prompt", *(c.title for c in columns)], answers(gateway_url, columns)))
            print("\nA live fine-tune (tenant 1, OpenAI's fine-tuning API, the trainer that `make run` started):")
            client = OpenAI(base_url=f"{gateway_url}/v1", api_key=created[0]["key"], max_retries=1)
            run = fine_tune(client)
            base = columns[0]
            print(
                render(
                    ["prompt", base.title, run.model],
                    [
                        [p, ask(gateway_url, base, p), ask(gateway_url, Column("", created[0]["key"], run.model), p)]
                        for p in PROMPTS[:4]
                    ],
                )
            )
        finally:
            for k in created:
                admin.delete(f"/admin/keys/{k['id']}")


def _demo_key(admin: httpx.Client, tenant_id: str, gateway_url: str) -> dict[str, str]:
    try:
        r = admin.post(f"/admin/tenants/{tenant_id}/keys", json={"name": "make-demo"})
    except httpx.TransportError:
        raise SystemExit(f"No gateway at {gateway_url}: start it with `make run` (or set GATEWAY_URL).") from None
    if r.status_code == 401:
        raise SystemExit("The gateway refused the admin token: set GATEWAY_ADMIN_TOKEN to the one it runs with.")
    result: dict[str, str] = r.raise_for_status().json()
    return result


if __name__ == "__main__":
    main()
