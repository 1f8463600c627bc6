"""The demo: two tenants, each deploying its own identity LoRA through the real upload API.

Idempotent across `make run`s: `.data/demo.json` remembers the tenants; each run makes fresh keys (a key is
shown once and never stored), and re-uploads an adapter only when the model recipe changed.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import httpx

from devstack.tinymodel import IDENTITY_ADAPTERS, recipe_hash

FILES = ("adapter_config.json", "adapter_model.safetensors")


def _key(admin: httpx.Client, tenant_id: str) -> httpx.Response:
    return admin.post(f"/admin/tenants/{tenant_id}/keys", json={"name": "make-run"})


def _upload(gateway_url: str, key: str, name: str, folder: Path) -> dict[str, Any]:
    files = {f: (f, (folder / f).read_bytes()) for f in FILES}
    r = httpx.post(
        f"{gateway_url}/v1/adapters",
        headers={"Authorization": f"Bearer {key}"},
        data={"name": name},
        files=files,
        timeout=60,
    )
    r.raise_for_status()
    deployment: dict[str, Any] = r.json()
    if deployment["status"] != "ready":
        raise RuntimeError(f"demo adapter {name} failed to deploy: {deployment['status_reason']}")
    return deployment


def _ensure_tenant(admin: httpx.Client, gateway_url: str, entry: dict[str, Any], models: Path, fresh: bool) -> str:
    """Make sure the tenant exists and has its adapter deployed; return a new key for it."""
    r = _key(admin, entry["tenant_id"]) if entry.get("tenant_id") else None
    if r is None or r.status_code == 404:  # new data folder or a reset database
        tenant = admin.post("/admin/tenants", json={"name": f"{entry['label']}-{secrets.token_hex(3)}"})
        tenant.raise_for_status()
        entry.update(tenant_id=tenant.json()["id"], adapter_id=None)
        r = _key(admin, entry["tenant_id"])
    r.raise_for_status()
    key: str = r.json()["key"]
    if entry.get("adapter_id") and not fresh:
        return key
    if entry.get("adapter_id"):
        httpx.delete(f"{gateway_url}/v1/adapters/{entry['adapter_id']}", headers={"Authorization": f"Bearer {key}"})
    deployment = _upload(gateway_url, key, entry["adapter_name"], models / "adapters" / entry["adapter_name"])
    entry.update(adapter_id=deployment["id"], base_model=deployment["base_model"])
    return key


def seed_demo(
    gateway_url: str, admin_token: str, data_dir: Path, models_dir: Path | None = None
) -> tuple[dict[str, Any], list[str]]:
    """Returns the demo state (tenants, their adapters, the base model) and one fresh key per tenant."""
    models_dir = models_dir or data_dir / "models"
    state_path = data_dir / "demo.json"
    state: dict[str, Any] = json.loads(state_path.read_text()) if state_path.exists() else {}
    recipe = recipe_hash()
    fresh = state.get("recipe") != recipe
    entries = state.get("tenants") or [
        {"label": f"demo-tenant-{i}", "adapter_name": name} for i, name in enumerate(IDENTITY_ADAPTERS, start=1)
    ]
    headers = {"Authorization": f"Bearer {admin_token}"}
    with httpx.Client(base_url=gateway_url, headers=headers, timeout=60) as admin:
        keys = [_ensure_tenant(admin, gateway_url, e, models_dir, fresh) for e in entries]
        models = httpx.get(f"{gateway_url}/v1/models", headers={"Authorization": f"Bearer {keys[0]}"}).json()
    state = {"recipe": recipe, "base_model": models["data"][0]["id"], "tenants": entries}
    state_path.write_text(json.dumps(state, indent=2))
    return state, keys
