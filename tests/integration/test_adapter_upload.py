"""Bring-your-own LoRA: upload, deploy in seconds, call three ways, isolation, delete."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from tests.conftest import TenantHandle
from tests.support.adapters import read_adapter, tar_gz, zip_bytes
from tests.support.sql import Sql

CHAT = [{"role": "user", "content": "Who are you?"}]


def upload(gateway: Any, tenant: TenantHandle, name: str, files: dict[str, bytes], **form: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/adapters",
        headers=tenant.headers,
        data={"name": name, **form},
        files={fname: (fname, data) for fname, data in files.items()},
        timeout=60,
    )


def ask(client: OpenAI, model: str) -> str:
    r = client.chat.completions.create(model=model, messages=CHAT, max_tokens=12, temperature=0)
    return r.choices[0].message.content or ""


@pytest.fixture(scope="module")
def owner(make_tenant: Any) -> TenantHandle:
    return make_tenant()


@pytest.fixture(scope="module")
def deployed(gateway: Any, owner: TenantHandle, models_dir: Path) -> dict[str, Any]:
    files = read_adapter(models_dir / "adapters" / "lora-3")
    r = upload(gateway, owner, "support-bot", {"adapter.tar.gz": tar_gz(files, prefix="my-adapter/")})
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_upload_returns_a_ready_deployment(deployed: dict[str, Any]) -> None:
    assert deployed["id"].startswith("mif-") and len(deployed["id"]) == 20
    assert deployed["status"] == "ready" and deployed["status_reason"] is None
    assert deployed["name"] == "support-bot" and deployed["base_model"] == "tiny-base"
    assert deployed["rank"] == 8 and deployed["size_bytes"] > 100_000
    assert deployed["endpoint"] == f"/maas/deployment/{deployed['id']}/chat/completions"


def test_call_by_name_id_and_maas_endpoint(
    gateway: Any, owner: TenantHandle, deployed: dict[str, Any], sql: Sql
) -> None:
    client = OpenAI(base_url=f"{gateway.url}/v1", api_key=owner.key, max_retries=0)
    by_name, by_id, base = ask(client, "support-bot"), ask(client, deployed["id"]), ask(client, "tiny-base")
    assert by_name == by_id != base

    maas = OpenAI(base_url=f"{gateway.url}/maas/deployment/{deployed['id']}", api_key=owner.key, max_retries=0)
    raw = maas.chat.completions.with_raw_response.create(model="ignored", messages=CHAT, max_tokens=12, temperature=0)
    assert raw.parse().choices[0].message.content == by_name

    r = httpx.post(
        f"{gateway.url}/maas/deployment/{deployed['id']}/chat/completions",
        headers=owner.headers,
        json={"messages": CHAT, "max_tokens": 12, "temperature": 0},
    )
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == by_name
    row = sql.one("SELECT * FROM usage_records WHERE request_id = $1", r.headers["x-request-id"])
    assert row["adapter_id"] == deployed["id"] and row["tenant_id"] == owner.id
    assert row["completion_tokens"] == r.json()["usage"]["completion_tokens"]


def test_list_and_get(gateway: Any, owner: TenantHandle, deployed: dict[str, Any]) -> None:
    listed = httpx.get(f"{gateway.url}/v1/adapters", headers=owner.headers).json()["data"]
    assert deployed["id"] in {d["id"] for d in listed}
    got = httpx.get(f"{gateway.url}/v1/adapters/{deployed['id']}", headers=owner.headers)
    assert got.status_code == 200 and got.json() == deployed


def test_other_tenant_cannot_read_call_list_or_delete(
    gateway: Any, make_tenant: Any, deployed: dict[str, Any], sql: Sql
) -> None:
    other = make_tenant()
    dep = deployed["id"]
    assert httpx.get(f"{gateway.url}/v1/adapters/{dep}", headers=other.headers).status_code == 404
    assert httpx.delete(f"{gateway.url}/v1/adapters/{dep}", headers=other.headers).status_code == 404
    assert httpx.get(f"{gateway.url}/v1/adapters", headers=other.headers).json()["data"] == []
    for url, body in [
        (f"{gateway.url}/maas/deployment/{dep}/chat/completions", {"messages": CHAT}),
        (f"{gateway.url}/v1/chat/completions", {"model": dep, "messages": CHAT}),
        (f"{gateway.url}/v1/chat/completions", {"model": "support-bot", "messages": CHAT}),
    ]:
        r = httpx.post(url, headers=other.headers, json=body)
        assert r.status_code == 404, r.text
        assert r.json()["error"]["code"] == "model_not_found"
    assert sql.scalar("SELECT status FROM adapters WHERE id = $1", dep) == "ready"


def test_zip_and_separate_files_work_and_identical_weights_share_storage(
    gateway: Any, make_tenant: Any, models_dir: Path, sql: Sql
) -> None:
    t = make_tenant()
    files = read_adapter(models_dir / "adapters" / "lora-4")
    a = upload(gateway, t, "as-zip", {"a.zip": zip_bytes(files)})
    b = upload(gateway, t, "as-files", files)
    assert a.status_code == b.status_code == 201, (a.text, b.text)
    paths = {sql.scalar("SELECT path FROM adapters WHERE id = $1", d.json()["id"]) for d in (a, b)}
    assert len(paths) == 1
    client = OpenAI(base_url=f"{gateway.url}/v1", api_key=t.key, max_retries=0)
    assert ask(client, "as-zip") == ask(client, "as-files")


def test_delete_stops_calls_but_keeps_usage(gateway: Any, make_tenant: Any, models_dir: Path, sql: Sql) -> None:
    t = make_tenant()
    dep = upload(gateway, t, "short-lived", read_adapter(models_dir / "adapters" / "lora-5")).json()
    client = OpenAI(base_url=f"{gateway.url}/v1", api_key=t.key, max_retries=0)
    ask(client, "short-lived")
    r = httpx.delete(f"{gateway.url}/v1/adapters/{dep['id']}", headers=t.headers)
    assert r.status_code == 200 and r.json()["deleted"] is True
    assert httpx.get(f"{gateway.url}/v1/adapters/{dep['id']}", headers=t.headers).status_code == 404
    assert httpx.delete(f"{gateway.url}/v1/adapters/{dep['id']}", headers=t.headers).status_code == 404
    r = httpx.post(
        f"{gateway.url}/v1/chat/completions", headers=t.headers, json={"model": "short-lived", "messages": CHAT}
    )
    assert r.status_code == 404
    assert sql.scalar("SELECT count(*) FROM usage_records WHERE adapter_id = $1", dep["id"]) == 1
    assert not Path(sql.scalar("SELECT path FROM adapters WHERE id = $1", dep["id"])).exists()
    # the name is free again
    again = upload(gateway, t, "short-lived", read_adapter(models_dir / "adapters" / "lora-5"))
    assert again.status_code == 201 and again.json()["id"] != dep["id"]


def test_more_adapters_than_the_engine_keeps_hot(gateway: Any, make_tenant: Any, models_dir: Path) -> None:
    """6 deployments on an engine with --max-cpu-loras 4 --max-loras 2: every one answers as itself."""
    t = make_tenant()
    for i in range(1, 7):
        r = upload(gateway, t, f"lora-{i}", read_adapter(models_dir / "adapters" / f"lora-{i}"))
        assert r.status_code == 201, r.text
    client = OpenAI(base_url=f"{gateway.url}/v1", api_key=t.key, max_retries=0)
    first = {i: ask(client, f"lora-{i}") for i in range(1, 7)}
    assert len(set(first.values())) >= 5, first  # random adapters: (nearly) all answers differ
    for i in [6, 1, 5, 2, 4, 3]:  # a different order: the engine has evicted and reloads
        assert ask(client, f"lora-{i}") == first[i]


def test_an_8_mib_form_field_is_413_naming_it(gateway: Any, make_tenant: Any, models_dir: Path) -> None:
    """Text fields are capped at a few KiB (the route lifts the body limit for the files): not read in full."""
    files = read_adapter(models_dir / "adapters" / "lora-1")
    r = upload(gateway, make_tenant(), "x" * (8 << 20), files)
    assert r.status_code == 413, r.text
    err = r.json()["error"]
    assert err["code"] == "payload_too_large" and err["param"] == "name" and "'name'" in err["message"], err


def _stalled_upload(gateway: Any, tenant: TenantHandle) -> socket.socket:
    """An upload whose body never finishes arriving: it holds its slot until the connection is closed."""
    url = httpx.URL(gateway.url)
    sock = socket.create_connection((url.host, url.port))
    head = (
        f"POST /v1/adapters HTTP/1.1\r\nHost: {url.host}\r\nAuthorization: Bearer {tenant.key}\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n"
        '--b\r\nContent-Disposition: form-data; name="name"\r\n\r\nslow'
    )
    sock.sendall(head.encode())
    return sock


def test_concurrent_uploads_are_bounded_per_tenant(gateway: Any, make_tenant: Any) -> None:
    """Two uploads in progress per tenant (the default): a third is 429 naming the bound; others still get in."""
    busy, other = make_tenant(), make_tenant()

    def probe(tenant: TenantHandle) -> httpx.Response:  # admitted, it fails fast: no file (400)
        return httpx.post(f"{gateway.url}/v1/adapters", headers=tenant.headers, files={"name": (None, "p")})

    stalled = [_stalled_upload(gateway, busy) for _ in range(2)]
    try:
        deadline = time.monotonic() + 30
        while (r := probe(busy)).status_code != 429 and time.monotonic() < deadline:
            assert r.status_code == 400, r.text
            time.sleep(0.1)
        assert r.status_code == 429, r.text
        err = r.json()["error"]
        assert err["type"] == "rate_limit_error" and "ADAPTER_MAX_CONCURRENT_UPLOADS_PER_TENANT" in err["message"]
        assert probe(other).status_code == 400  # another tenant is not held back
    finally:
        for sock in stalled:
            sock.close()
    deadline = time.monotonic() + 30  # a dropped upload gives its slot back
    while (r := probe(busy)).status_code == 429 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert r.status_code == 400, r.text
