"""An admin or tenant action and its audit row commit together: when the audit write fails, the change is not
there either; when it succeeds, both are."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TenantHandle
from tests.integration.test_adapter_upload import upload
from tests.support.adapters import read_adapter
from tests.support.sql import Sql

# A trigger that refuses the audit rows of the actions listed in test_hooks.failing_actions. Its own schema:
# the migrations check (test_models_and_migrations_agree) compares the public schema only.
_INSTALL = [
    "CREATE SCHEMA IF NOT EXISTS test_hooks",
    "CREATE TABLE IF NOT EXISTS test_hooks.failing_actions (action text PRIMARY KEY)",
    """CREATE OR REPLACE FUNCTION test_hooks.fail_audit() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF EXISTS (SELECT 1 FROM test_hooks.failing_actions WHERE action = NEW.action) THEN
           RAISE EXCEPTION 'audit write refused by the test for %', NEW.action;
         END IF;
         RETURN NEW;
       END $$""",
    "DROP TRIGGER IF EXISTS audit_fails_in_tests ON audit_log",
    "CREATE TRIGGER audit_fails_in_tests BEFORE INSERT ON audit_log FOR EACH ROW "
    "EXECUTE FUNCTION test_hooks.fail_audit()",
]
_REMOVE = ["DROP TRIGGER IF EXISTS audit_fails_in_tests ON audit_log", "DROP SCHEMA IF EXISTS test_hooks CASCADE"]


@pytest.fixture(scope="module")
def audit_hook(gateway: Any, sql: Sql) -> Iterator[None]:
    for statement in _INSTALL:
        sql.fetch(statement)
    yield
    for statement in _REMOVE:
        sql.fetch(statement)


@contextmanager
def audit_fails(sql: Sql, action: str) -> Iterator[None]:
    sql.fetch("INSERT INTO test_hooks.failing_actions VALUES ($1)", action)
    try:
        yield
    finally:
        sql.fetch("DELETE FROM test_hooks.failing_actions WHERE action = $1", action)


def audited(sql: Sql, action: str, target: str) -> int:
    return int(sql.scalar("SELECT count(*) FROM audit_log WHERE action = $1 AND target = $2", action, target))


def refused(r: httpx.Response) -> None:
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error", r.text


def test_tenant_create_with_its_account(audit_hook: None, admin: httpx.Client, sql: Sql) -> None:
    name = f"atomic-{secrets.token_hex(4)}"
    with audit_fails(sql, "tenant.create"):
        refused(admin.post("/admin/tenants", json={"name": name, "trial_tokens": 7}))
    assert sql.scalar("SELECT count(*) FROM tenants WHERE name = $1", name) == 0
    assert (
        sql.scalar("SELECT count(*) FROM audit_log WHERE action = 'tenant.create' AND detail->>'name' = $1", name) == 0
    )
    orphans = "SELECT count(*) FROM billing_accounts a LEFT JOIN tenants t ON t.id = a.tenant_id WHERE t.id IS NULL"
    assert sql.scalar(orphans) == 0

    r = admin.post("/admin/tenants", json={"name": name, "trial_tokens": 7})  # the name was never taken
    assert r.status_code == 201, r.text
    tenant = r.json()["id"]
    assert sql.scalar("SELECT count(*) FROM billing_accounts WHERE tenant_id = $1", tenant) == 1
    assert sql.scalar("SELECT trial_after FROM ledger_entries WHERE tenant_id = $1", tenant) == 7
    assert audited(sql, "tenant.create", tenant) == 1


def test_tenant_and_key_changes(audit_hook: None, admin: httpx.Client, make_tenant: Any, sql: Sql) -> None:
    t: TenantHandle = make_tenant()
    with audit_fails(sql, "tenant.update"):
        refused(admin.patch(f"/admin/tenants/{t.id}", json={"suspended": True, "rpm_limit": 5}))
    row = sql.one("SELECT suspended_at, rpm_limit FROM tenants WHERE id = $1", t.id)
    assert row == {"suspended_at": None, "rpm_limit": None} and audited(sql, "tenant.update", t.id) == 0
    assert admin.patch(f"/admin/tenants/{t.id}", json={"suspended": True, "rpm_limit": 5}).status_code == 200
    row = sql.one("SELECT suspended_at, rpm_limit FROM tenants WHERE id = $1", t.id)
    assert row["suspended_at"] is not None and row["rpm_limit"] == 5 and audited(sql, "tenant.update", t.id) == 1

    with audit_fails(sql, "key.create"):
        refused(admin.post(f"/admin/tenants/{t.id}/keys", json={"name": "never", "rpm_limit": 3}))
    assert sql.scalar("SELECT count(*) FROM api_keys WHERE tenant_id = $1 AND name = 'never'", t.id) == 0

    with audit_fails(sql, "key.update"):
        refused(admin.patch(f"/admin/keys/{t.key_id}", json={"tpm_limit": 100}))
    assert sql.scalar("SELECT tpm_limit FROM api_keys WHERE id = $1", t.key_id) is None

    with audit_fails(sql, "key.revoke"):
        refused(admin.delete(f"/admin/keys/{t.key_id}"))
    assert sql.scalar("SELECT revoked_at FROM api_keys WHERE id = $1", t.key_id) is None
    assert audited(sql, "key.revoke", t.key_id) == 0
    assert admin.delete(f"/admin/keys/{t.key_id}").status_code == 204
    assert sql.scalar("SELECT revoked_at FROM api_keys WHERE id = $1", t.key_id) is not None
    assert audited(sql, "key.revoke", t.key_id) == 1


def test_credit_and_price(audit_hook: None, admin: httpx.Client, make_tenant: Any, sql: Sql) -> None:
    t: TenantHandle = make_tenant()
    entries = "SELECT count(*) FROM ledger_entries WHERE tenant_id = $1 AND kind = 'credit'"
    with audit_fails(sql, "credit.add"):
        refused(admin.post(f"/admin/tenants/{t.id}/credits", json={"amount": 500}))
    assert sql.scalar(entries, t.id) == 0 and audited(sql, "credit.add", t.id) == 0
    assert admin.post(f"/admin/tenants/{t.id}/credits", json={"amount": 500}).status_code == 201
    assert sql.scalar(entries, t.id) == 1 and audited(sql, "credit.add", t.id) == 1

    model = f"atomic-price-{secrets.token_hex(4)}"
    price = {"model": model, "prompt_per_million": 1, "completion_per_million": 2}
    with audit_fails(sql, "price.set"):
        refused(admin.post("/admin/prices", json=price))
    assert sql.scalar("SELECT count(*) FROM prices WHERE model = $1", model) == 0
    assert admin.post("/admin/prices", json=price).status_code == 201
    assert (
        sql.scalar("SELECT count(*) FROM prices WHERE model = $1", model) == 1 and audited(sql, "price.set", model) == 1
    )


def test_a_refused_period_close_leaves_no_audit_row(audit_hook: None, admin: httpx.Client, sql: Sql) -> None:
    r = admin.post("/admin/billing/close-period", json={"period": "13-2026"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "period", r.text
    assert audited(sql, "billing.close_period", "13-2026") == 0
    with audit_fails(sql, "billing.close_period"):
        refused(admin.post("/admin/billing/close-period", json={"period": "1999-01"}))
    assert audited(sql, "billing.close_period", "1999-01") == 0
    assert admin.post("/admin/billing/close-period", json={"period": "1999-01"}).status_code == 200
    assert audited(sql, "billing.close_period", "1999-01") == 1


def test_adapter_register_upload_and_delete(
    audit_hook: None, gateway: Any, admin: httpx.Client, make_tenant: Any, models_dir: Path, sql: Sql
) -> None:
    t: TenantHandle = make_tenant()
    adapters = "SELECT count(*) FROM adapters WHERE tenant_id = $1 AND name = $2"
    with audit_fails(sql, "adapter.register"):
        path = str(models_dir / "adapters" / "lora-1")
        refused(admin.post(f"/admin/tenants/{t.id}/adapters", json={"name": "by-admin", "path": path}))
    assert sql.scalar(adapters, t.id, "by-admin") == 0

    files = read_adapter(models_dir / "adapters" / "lora-2")
    with audit_fails(sql, "adapter.upload"):
        refused(upload(gateway, t, "atomic", files))
    assert sql.scalar(adapters, t.id, "atomic") == 0
    listed = httpx.get(f"{gateway.url}/v1/adapters", headers=t.headers).json()["data"]
    assert listed == []

    r = upload(gateway, t, "atomic", files)  # the name is free: nothing of the refused upload was kept
    assert r.status_code == 201 and r.json()["status"] == "ready", r.text
    dep = r.json()["id"]
    assert audited(sql, "adapter.upload", dep) == 1

    with audit_fails(sql, "adapter.delete"):
        refused(httpx.delete(f"{gateway.url}/v1/adapters/{dep}", headers=t.headers))
    assert sql.scalar("SELECT deleted_at FROM adapters WHERE id = $1", dep) is None
    assert audited(sql, "adapter.delete", dep) == 0
    assert httpx.get(f"{gateway.url}/v1/adapters/{dep}", headers=t.headers).json()["status"] == "ready"
    assert httpx.delete(f"{gateway.url}/v1/adapters/{dep}", headers=t.headers).status_code == 200
    assert sql.scalar("SELECT deleted_at FROM adapters WHERE id = $1", dep) is not None
    assert audited(sql, "adapter.delete", dep) == 1


def test_duplicate_keys_are_named_per_call_and_leave_no_audit_row(
    audit_hook: None, admin: httpx.Client, make_tenant: Any, models_dir: Path, sql: Sql
) -> None:
    """The database's unique indexes answer as the call words them (db_errors / billing's duplicate_as)."""
    a, b = make_tenant(), make_tenant()
    taken = sql.scalar("SELECT name FROM tenants WHERE id = $1", a.id)
    r = admin.patch(f"/admin/tenants/{b.id}", json={"name": taken, "suspended": True})
    assert r.status_code == 409, r.text
    assert r.json()["error"] == {
        "message": f"A tenant named {taken!r} already exists.", "type": "invalid_request_error", "code": "conflict",
        "param": "name",
    }  # fmt: skip
    assert sql.scalar("SELECT suspended_at FROM tenants WHERE id = $1", b.id) is None
    assert audited(sql, "tenant.update", b.id) == 0

    path = str(models_dir / "adapters" / "lora-1")
    assert admin.post(f"/admin/tenants/{a.id}/adapters", json={"name": "twice", "path": path}).status_code == 201
    r = admin.post(f"/admin/tenants/{a.id}/adapters", json={"name": "twice", "path": path})
    assert r.status_code == 409 and r.json()["error"]["message"] == "You already have an adapter named 'twice'."
    assert sql.scalar("SELECT count(*) FROM audit_log WHERE action = 'adapter.register' AND detail->>'tenant_id' = $1",
                      a.id) == 1  # fmt: skip

    model = f"dup-price-{secrets.token_hex(4)}"
    price = {"model": model, "prompt_per_million": 1, "completion_per_million": 1,
             "effective_from": "2030-01-01T00:00:00Z"}  # fmt: skip
    assert admin.post("/admin/prices", json=price).status_code == 201
    r = admin.post("/admin/prices", json=price)
    assert r.status_code == 400 and r.json()["error"]["param"] == "effective_from", r.text
    assert "already has a price starting at" in r.json()["error"]["message"]
    assert audited(sql, "price.set", model) == 1
