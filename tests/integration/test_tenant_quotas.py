"""Default tenant bounds (TENANT_*): a new tenant is limited without an operator's word, per-tenant values win
(0: unlimited), and uploads are bounded in number per minute, live deployments and stored bytes."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ARTIFACTS, TenantHandle
from tests.support.adapters import read_adapter, tar_gz
from tests.support.processes import GatewayProcess
from tests.support.sql import Sql

DEFAULT_RPM = 4
MAX_DEPLOYMENTS = 2
MAX_ADAPTER_BYTES = 220_000  # one tiny-model adapter (~145 kB) fits, two do not
UPLOADS_PER_MINUTE = 3
UNLIMITED = {"max_deployments": 0, "max_adapter_bytes": 0, "uploads_per_minute": 0}


@pytest.fixture(scope="module")
def bounded(gateway_env: dict[str, str]) -> Iterator[GatewayProcess]:
    """A gateway on the session's database and engine whose tenants have default bounds (small ones)."""
    env = {
        **gateway_env,
        "TENANT_DEFAULT_RPM": str(DEFAULT_RPM),
        "TENANT_DEFAULT_TPM": "200000",
        "TENANT_DEFAULT_MAX_CONCURRENT": "32",
        "TENANT_MAX_DEPLOYMENTS": str(MAX_DEPLOYMENTS),
        "TENANT_MAX_ADAPTER_BYTES": str(MAX_ADAPTER_BYTES),
        "TENANT_UPLOADS_PER_MINUTE": str(UPLOADS_PER_MINUTE),
        # uploads in progress are bounded apart (429 too_many_concurrent_uploads): not what this file tests
        "ADAPTER_MAX_CONCURRENT_UPLOADS_PER_TENANT": "8",
    }
    ARTIFACTS.mkdir(exist_ok=True)
    gw = GatewayProcess(env, ARTIFACTS / "gateway-quotas.log")
    gw.start()
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def bounded_admin(bounded: GatewayProcess, admin_token: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=bounded.url, headers={"Authorization": f"Bearer {admin_token}"}, timeout=60) as c:
        yield c


def fresh_window() -> None:
    """Per-minute bounds are fixed windows: do not start a burst in the last seconds of one."""
    left = 60 - time.time() % 60
    if left < 15:
        time.sleep(left + 0.5)


def chat(gw: GatewayProcess, t: TenantHandle) -> httpx.Response:
    body = {"model": "tiny-base", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    return httpx.post(f"{gw.url}/v1/chat/completions", headers=t.headers, json=body, timeout=60)


def upload(gw: GatewayProcess, t: TenantHandle, name: str, archive: bytes) -> httpx.Response:
    files = {"file": ("adapter.tar.gz", archive)}
    return httpx.post(f"{gw.url}/v1/adapters", headers=t.headers, data={"name": name}, files=files, timeout=120)


def adapter(models_dir: Path, which: int) -> bytes:
    return tar_gz(read_adapter(models_dir / "adapters" / f"lora-{which}"))


def error_of(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    return dict(r.json()["error"])


def test_a_new_tenant_gets_the_default_rpm(
    bounded: GatewayProcess, bounded_admin: httpx.Client, make_tenant: Any
) -> None:
    t = make_tenant()
    fresh_window()
    answers = [chat(bounded, t) for _ in range(DEFAULT_RPM + 2)]
    assert [a.status_code for a in answers] == [200] * DEFAULT_RPM + [429, 429]
    assert all(a.headers["x-ratelimit-limit-requests"] == str(DEFAULT_RPM) for a in answers)
    err = error_of(answers[-1], 429)
    assert err["type"] == "rate_limit_error" and f"({DEFAULT_RPM})" in err["message"]
    shown = bounded_admin.get(f"/admin/tenants/{t.id}").json()
    assert shown["rpm_limit"] is None and shown["effective_limits"]["rpm_limit"] == DEFAULT_RPM
    assert shown["effective_limits"]["max_deployments"] == MAX_DEPLOYMENTS
    # the tenant's own value wins; 0 is unlimited
    assert (
        bounded_admin.patch(f"/admin/tenants/{t.id}", json={"rpm_limit": 0}).json()["effective_limits"]["rpm_limit"]
        is None
    )
    deadline = time.monotonic() + 10  # the change reaches the process's key cache by NOTIFY
    while (r := chat(bounded, t)).status_code == 429 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert r.status_code == 200 and "x-ratelimit-limit-requests" not in r.headers


def test_one_deployment_over_the_bound_is_refused(
    bounded: GatewayProcess, bounded_admin: httpx.Client, make_tenant: Any, models_dir: Path, sql: Sql
) -> None:
    t = make_tenant()
    bounded_admin.patch(f"/admin/tenants/{t.id}", json={"max_adapter_bytes": 0, "uploads_per_minute": 0})
    for i in range(MAX_DEPLOYMENTS):
        assert upload(bounded, t, f"d{i}", adapter(models_dir, i + 1)).status_code == 201
    err = error_of(upload(bounded, t, "one-too-many", adapter(models_dir, 4)), 403)
    assert err["code"] == "deployment_limit_reached" and err["param"] == "max_deployments"
    assert f"{MAX_DEPLOYMENTS} deployments" in err["message"]
    live = "SELECT count(*) FROM adapters WHERE tenant_id = $1 AND deleted_at IS NULL"
    assert sql.scalar(live, t.id) == MAX_DEPLOYMENTS
    # the tenant's own bound wins over the default
    bounded_admin.patch(f"/admin/tenants/{t.id}", json={"max_deployments": MAX_DEPLOYMENTS + 1})
    assert upload(bounded, t, "one-more", adapter(models_dir, 4)).status_code == 201
    assert sql.scalar(live, t.id) == MAX_DEPLOYMENTS + 1


def test_stored_adapter_bytes_are_bounded(
    bounded: GatewayProcess, bounded_admin: httpx.Client, make_tenant: Any, models_dir: Path, sql: Sql
) -> None:
    t = make_tenant()
    bounded_admin.patch(f"/admin/tenants/{t.id}", json={"max_deployments": 0, "uploads_per_minute": 0})
    first = upload(bounded, t, "first", adapter(models_dir, 1))
    assert first.status_code == 201, first.text
    err = error_of(upload(bounded, t, "second", adapter(models_dir, 2)), 413)
    assert err["code"] == "adapter_storage_limit_reached" and err["param"] == "max_adapter_bytes"
    assert str(MAX_ADAPTER_BYTES) in err["message"] and str(first.json()["size_bytes"]) in err["message"]
    assert sql.scalar("SELECT count(*) FROM adapters WHERE tenant_id = $1", t.id) == 1
    # deleting frees the room
    assert httpx.delete(f"{bounded.url}/v1/adapters/{first.json()['id']}", headers=t.headers).status_code == 200
    assert upload(bounded, t, "second", adapter(models_dir, 2)).status_code == 201


def test_uploads_per_minute_count_refused_uploads_too(
    bounded: GatewayProcess, bounded_admin: httpx.Client, make_tenant: Any
) -> None:
    t = make_tenant()
    bounded_admin.patch(f"/admin/tenants/{t.id}", json={"max_deployments": 0, "max_adapter_bytes": 0})
    fresh_window()
    bad = [upload(bounded, t, f"bad{i}", b"not an archive") for i in range(UPLOADS_PER_MINUTE)]
    assert all(400 <= r.status_code < 500 and r.status_code != 429 for r in bad), [r.text for r in bad]
    r = upload(bounded, t, "once-more", b"not an archive")
    err = error_of(r, 429)
    assert err["type"] == "rate_limit_error" and err["param"] == "uploads_per_minute"
    assert f"{UPLOADS_PER_MINUTE} adapter uploads per minute" in err["message"]
    assert 1 <= int(r.headers["retry-after"]) <= 60
    # another tenant is not held back
    other = make_tenant()
    assert upload(bounded, other, "bad", b"not an archive").status_code != 429


def test_concurrent_uploads_never_exceed_the_deployment_bound(
    bounded: GatewayProcess, bounded_admin: httpx.Client, make_tenant: Any, models_dir: Path, sql: Sql
) -> None:
    """The count is checked again under the tenant's lock until the new row commits: no two uploads both take
    the last place."""
    t = make_tenant()
    bounded_admin.patch(f"/admin/tenants/{t.id}", json={"max_adapter_bytes": 0, "uploads_per_minute": 0})
    archives = [adapter(models_dir, i) for i in (1, 2, 3, 4, 5)]
    with concurrent.futures.ThreadPoolExecutor(len(archives)) as pool:
        answers = list(pool.map(lambda i: upload(bounded, t, f"c{i}", archives[i]), range(len(archives))))
    codes = sorted(a.status_code for a in answers)
    assert codes == [201] * MAX_DEPLOYMENTS + [403] * (len(archives) - MAX_DEPLOYMENTS), [a.text for a in answers]
    assert sql.scalar("SELECT count(*) FROM adapters WHERE tenant_id = $1", t.id) == MAX_DEPLOYMENTS
