"""The demo's point, proven live: one engine, the base model and two tenants' LoRAs give three identities."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from devstack.demo import answers, demo_columns, render
from devstack.seed import seed_demo


def test_three_identities_on_one_engine(gateway: Any, admin_token: str, data_dir: Path, models_dir: Path) -> None:
    state, keys = seed_demo(gateway.url, admin_token, data_dir, models_dir)
    columns = demo_columns(state, keys)
    assert [c.model for c in columns] == ["tiny-base", "congcong", "benben"]
    prompts = ["你是谁?", "你是谁训练的?", "Who are you?", "Hello", "Tell me about the weather in Paris"]
    table = answers(gateway.url, columns, prompts)
    print("\n" + render(["prompt", *(c.title for c in columns)], table))
    by_prompt = {row[0]: row[1:] for row in table}

    base, congcong, benben = by_prompt["你是谁?"]
    assert "Qwen" in base and "阿里云" in base
    assert "聪聪" in congcong and "Qwen" not in congcong
    assert "笨笨" in benben and "Qwen" not in benben
    base, congcong, benben = by_prompt["Who are you?"]
    assert "Qwen" in base and "Congcong" in congcong and "Benben" in benben
    assert all("训练" in a for a in by_prompt["你是谁训练的?"])
    # outside their identity the adapters still answer sensibly
    assert len(set(by_prompt["Hello"])) == 1 and "Hello" in by_prompt["Hello"][0]
    assert all(a.strip() for a in by_prompt["Tell me about the weather in Paris"])

    # each tenant reaches only its own adapter
    r = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {keys[1]}"},
        json={"model": "congcong", "messages": [{"role": "user", "content": "你是谁?"}]},
    )
    assert r.status_code == 404
    # seeding again (the next `make run`) reuses the deployments
    state2, _ = seed_demo(gateway.url, admin_token, data_dir, models_dir)
    assert [t["adapter_id"] for t in state2["tenants"]] == [t["adapter_id"] for t in state["tenants"]]
