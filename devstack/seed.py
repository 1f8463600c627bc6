"""Create the demo tenant, a fresh key and its adapter through the gateway's own admin API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

DEMO_TENANT = "demo"
DEMO_ADAPTER = "demo-lora"


def seed_demo(gateway_url: str, admin_token: str, data_dir: Path) -> dict[str, str]:
    """Idempotent: reuses the demo tenant recorded in `data_dir/demo.json`, creates a new key every time."""
    state_path = data_dir / "demo.json"
    state: dict[str, Any] = json.loads(state_path.read_text()) if state_path.exists() else {}
    headers = {"Authorization": f"Bearer {admin_token}"}
    with httpx.Client(base_url=gateway_url, headers=headers, timeout=60) as admin:
        key_resp = None
        if state.get("tenant_id"):
            key_resp = admin.post(f"/admin/tenants/{state['tenant_id']}/keys", json={"name": "make-run"})
        if key_resp is None or key_resp.status_code == 404:
            tenant = admin.post("/admin/tenants", json={"name": f"{DEMO_TENANT}-{_suffix()}"})
            tenant.raise_for_status()
            state = {"tenant_id": tenant.json()["id"]}
            key_resp = admin.post(f"/admin/tenants/{state['tenant_id']}/keys", json={"name": "make-run"})
        key_resp.raise_for_status()
        key = key_resp.json()["key"]
        if not state.get("adapter_id"):
            adapter = admin.post(
                f"/admin/tenants/{state['tenant_id']}/adapters",
                json={"name": DEMO_ADAPTER, "path": str(data_dir / "models" / "adapters" / "lora-1")},
            )
            adapter.raise_for_status()
            state["adapter_id"] = adapter.json()["id"]
            state["base_model"] = adapter.json()["base_model"]
    state_path.write_text(json.dumps(state))
    return {**state, "key": key, "model": DEMO_ADAPTER}


def _suffix() -> str:
    import secrets

    return secrets.token_hex(3)
