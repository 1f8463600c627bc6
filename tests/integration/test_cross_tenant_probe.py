"""With tenant B's key, every tenant route that takes an id is called with tenant A's ids: 404, nothing changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.adapters import read_adapter
from tests.support.sql import Sql

CHAT = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def victim(gateway: Any, make_tenant: Any, models_dir: Path) -> dict[str, Any]:
    a = make_tenant()
    files = read_adapter(models_dir / "adapters" / "lora-2")
    r = httpx.post(
        f"{gateway.url}/v1/adapters", headers=a.headers, data={"name": "a-private"},
        files={n: (n, d) for n, d in files.items()},
    )  # fmt: skip
    assert r.status_code == 201
    return {"tenant": a, "deployment": r.json()["id"], "name": "a-private"}


def probes(v: dict[str, Any]) -> list[tuple[str, str, dict[str, Any] | None]]:
    dep, name, key_id, tenant_id = v["deployment"], v["name"], v["tenant"].key_id, v["tenant"].id
    return [
        ("GET", f"/v1/adapters/{dep}", None),
        ("DELETE", f"/v1/adapters/{dep}", None),
        ("POST", f"/maas/deployment/{dep}/chat/completions", {"messages": CHAT}),
        ("POST", f"/maas/deployment/{dep}/completions", {"prompt": "hi"}),
        ("POST", "/v1/chat/completions", {"model": dep, "messages": CHAT}),
        ("POST", "/v1/chat/completions", {"model": name, "messages": CHAT}),
        ("POST", "/v1/completions", {"model": dep, "prompt": "hi"}),
        ("POST", "/v1/completions", {"model": name, "prompt": "hi", "stream": True}),
        ("GET", f"/admin/tenants/{tenant_id}", None),  # admin routes: a tenant key is never enough (401)
        ("DELETE", f"/admin/keys/{key_id}", None),
        ("GET", f"/admin/tenants/{tenant_id}/usage", None),
    ]


def snapshot(sql: Sql, v: dict[str, Any]) -> tuple[Any, ...]:
    t = v["tenant"].id
    return (
        sql.fetch("SELECT id, status, deleted_at FROM adapters WHERE tenant_id = $1 ORDER BY id", t),
        sql.fetch("SELECT id, revoked_at FROM api_keys WHERE tenant_id = $1 ORDER BY id", t),
        sql.scalar("SELECT count(*) FROM usage_records WHERE tenant_id = $1", t),
        sql.scalar("SELECT count(*) FROM ledger_entries WHERE tenant_id = $1", t),
    )


@pytest.mark.parametrize("index", range(11))
def test_other_tenants_ids_are_invisible(
    gateway: Any, make_tenant: Any, victim: dict[str, Any], sql: Sql, index: int
) -> None:
    b = make_tenant()
    method, path, body = probes(victim)[index]
    before, b_usage = snapshot(sql, victim), sql.scalar("SELECT count(*) FROM usage_records WHERE tenant_id = $1", b.id)
    r = httpx.request(method, f"{gateway.url}{path}", headers=b.headers, json=body)
    expected = 401 if path.startswith("/admin") else 404
    assert r.status_code == expected, (method, path, r.text)
    assert set(r.json()["error"]) == {"message", "type", "code", "param"}
    assert snapshot(sql, victim) == before
    assert sql.scalar("SELECT count(*) FROM usage_records WHERE tenant_id = $1", b.id) == b_usage
