"""The dashboard does what the admin API does, signed in as an operator user: each action through the admin API's
services, audited under the operator's name, allowed by role (viewer: 403 on every write; billing: credit and
periods only), refusals shown on the page with nothing changed; and in Debian's chromium, by labels and roles."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, sync_playwright

from tests.conftest import ARTIFACTS, TenantHandle
from tests.support.browser import CHROMIUM_ARGS, chromium_path
from tests.support.signin import PASSWORD, Browser, create_operator
from tests.support.sql import Sql

NEW_KEY = re.compile(r'id="new-key-value" value="([^"]+)"')


@dataclass
class Operators:
    owner: str
    billing: str
    viewer: str


@pytest.fixture(scope="module")
def operators(gateway_env: dict[str, str]) -> Operators:
    return Operators(*(create_operator(gateway_env, role) for role in ("owner", "billing", "viewer")))


@pytest.fixture
def owner(gateway: Any, operators: Operators) -> Iterator[Browser]:
    with Browser(gateway.url) as browser:
        assert browser.sign_in(operators.owner).status_code == 303
        yield browser


def audited(sql: Sql, action: str, target: str) -> list[dict[str, Any]]:
    """The audit rows of an action on a target, oldest first (detail decoded)."""
    rows = sql.fetch("SELECT actor, detail FROM audit_log WHERE action = $1 AND target = $2 ORDER BY id",
                     action, target)  # fmt: skip
    return [{**r, "detail": json.loads(r["detail"]) if isinstance(r["detail"], str) else r["detail"]} for r in rows]


def actors(sql: Sql, action: str, target: str) -> list[str]:
    return [r["actor"] for r in audited(sql, action, target)]


def status_with(base: str, key: str) -> int:
    return httpx.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code


def test_an_owner_creates_a_tenant_and_a_key_and_manages_them(
    gateway: Any, owner: Browser, operators: Operators, admin: httpx.Client, sql: Sql
) -> None:
    me = f"operator:{operators.owner}"
    name = f"acts-{secrets.token_hex(4)}"
    r = owner.post_form("/admin/dashboard/tenants", {"name": name, "billing_mode": "prepaid", "trial_tokens": "0"})
    assert r.status_code == 303, r.text
    tenant_id = r.headers["location"].rsplit("/", 1)[1]
    page = r.headers["location"]
    assert f"Tenant {name} created" in owner.http.get(page).text
    assert admin.get(f"/admin/tenants/{tenant_id}").json()["billing_mode"] == "prepaid"
    assert actors(sql, "tenant.create", tenant_id) == [me]

    r = owner.post_form(f"{page}/keys", {"name": "from-the-dashboard", "expires_at": ""}, page=page)
    assert r.status_code == 201 and "shown only this once" in r.text
    key = NEW_KEY.search(r.text)
    assert key is not None
    plaintext = key.group(1)
    assert status_with(gateway.url, plaintext) == 200
    [row] = sql.fetch("SELECT id, key_hash FROM api_keys WHERE tenant_id = $1", tenant_id)
    assert plaintext not in str(row["key_hash"])
    assert actors(sql, "key.create", row["id"]) == [me]
    assert plaintext not in owner.http.get(page).text  # shown once: not on the page again

    assert owner.post_form(f"{page}/suspend", {}, page=page).status_code == 303
    assert status_with(gateway.url, plaintext) == 403
    assert owner.post_form(f"{page}/resume", {}, page=page).status_code == 303
    assert status_with(gateway.url, plaintext) == 200
    changes = [(r["actor"], r["detail"]) for r in audited(sql, "tenant.update", tenant_id)]
    assert changes == [(me, {"suspended": True}), (me, {"suspended": False})]

    limits = {"rpm_limit": "120", "tpm_limit": "", "max_concurrent_requests": "0", "max_deployments": "3",
              "max_adapter_bytes": "", "uploads_per_minute": "2"}  # fmt: skip
    assert owner.post_form(f"{page}/limits", limits, page=page).status_code == 303
    stored = admin.get(f"/admin/tenants/{tenant_id}").json()
    expected = {"rpm_limit": 120, "tpm_limit": None, "max_concurrent_requests": 0, "max_deployments": 3,
                "max_adapter_bytes": None, "uploads_per_minute": 2}  # fmt: skip
    assert {k: stored[k] for k in limits} == expected
    assert 'value="120"' in owner.http.get(page).text  # the form shows what is stored
    key_limits = {"rpm_limit": "7", "tpm_limit": "", "max_concurrent_requests": "2"}
    assert owner.post_form(f"/admin/dashboard/keys/{row['id']}/limits", key_limits, page=page).status_code == 303
    k = sql.one("SELECT rpm_limit, tpm_limit, max_concurrent_requests FROM api_keys WHERE id = $1", row["id"])
    assert (k["rpm_limit"], k["tpm_limit"], k["max_concurrent_requests"]) == (7, None, 2)
    assert actors(sql, "key.update", row["id"]) == [me]

    assert owner.post_form(f"{page}/credits", {"amount": "2500", "note": "top-up"}, page=page).status_code == 303
    assert admin.get(f"/admin/tenants/{tenant_id}/balance").json()["credit_balance"] == 2500
    assert actors(sql, "credit.add", tenant_id) == [me]

    model = f"price-model-{secrets.token_hex(3)}"
    price = {"model": model, "prompt_per_million": "10", "completion_per_million": "30"}
    r = owner.post_form("/admin/dashboard/prices", price, page="/admin/dashboard/billing")
    assert r.status_code == 303
    assert f"Price of {model} set" in owner.http.get("/admin/dashboard/billing").text
    assert [p["completion_per_million"] for p in admin.get("/admin/prices").json()["data"] if p["model"] == model] == [
        30
    ]
    assert actors(sql, "price.set", model) == [me]

    r = owner.post_form("/admin/dashboard/billing/close-period", {"period": "2001-01"}, page="/admin/dashboard/billing")
    assert r.status_code == 303
    assert "Period 2001-01 closed: 0 invoices" in owner.http.get("/admin/dashboard/billing").text
    assert actors(sql, "billing.close_period", "2001-01") == [me]


def test_an_owner_manages_operator_users(gateway: Any, owner: Browser, operators: Operators, sql: Sql) -> None:
    me = f"operator:{operators.owner}"
    page = "/admin/dashboard/operators"
    email = f"made-{secrets.token_hex(4)}@example.com"
    form = {"name": "Made Here", "email": email, "role": "billing", "password": PASSWORD}
    assert owner.post_form(page, form, page=page).status_code == 303
    user = sql.one("SELECT id, role, tenant_id, password_hash FROM users WHERE email = $1", email)
    assert (user["role"], user["tenant_id"]) == ("billing", None) and PASSWORD not in user["password_hash"]
    assert actors(sql, "operator.create", user["id"]) == [me]

    with Browser(gateway.url) as them:
        assert them.sign_in(email).status_code == 303
        new = "another long pass phrase"
        assert owner.post_form(f"{page}/{user['id']}/password", {"password": new}, page=page).status_code == 303
        assert not them.opens_dashboard()  # a reset signs the user out everywhere
        assert them.sign_in(email).status_code == 401
        assert them.sign_in(email, new).status_code == 303
        assert owner.post_form(f"{page}/{user['id']}/disable", {}, page=page).status_code == 303
        assert not them.opens_dashboard()
        assert them.sign_in(email, new).status_code == 403
        assert owner.post_form(f"{page}/{user['id']}/enable", {}, page=page).status_code == 303
        assert them.sign_in(email, new).status_code == 303
    for action in ("user.password_reset", "user.disable", "user.enable"):
        assert actors(sql, action, user["id"]) == [me], action


def test_refused_forms_show_the_message_and_change_nothing(
    owner: Browser, operators: Operators, make_tenant: Callable[[], TenantHandle], admin: httpx.Client, sql: Sql
) -> None:
    t = make_tenant()
    page = f"/admin/dashboard/tenants/{t.id}"
    entries = sql.scalar("SELECT count(*) FROM ledger_entries WHERE tenant_id = $1", t.id)
    audit_rows = sql.scalar("SELECT count(*) FROM audit_log")

    r = owner.post_form(f"{page}/credits", {"amount": "-500"}, page=page)
    assert r.status_code == 400 and "amount must be a positive integer" in r.text and 'role="alert"' in r.text
    r = owner.post_form(f"{page}/credits", {"amount": "lots"}, page=page)
    assert r.status_code == 400 and "Amount must be a whole number" in r.text
    assert sql.scalar("SELECT count(*) FROM ledger_entries WHERE tenant_id = $1", t.id) == entries

    billing = "/admin/dashboard/billing"
    r = owner.post_form(f"{billing}/close-period", {"period": "2026-13"}, page=billing)
    assert r.status_code == 400 and "period must look like 2026-11" in r.text
    r = owner.post_form("/admin/dashboard/prices", {"model": "tiny-base", "prompt_per_million": "-1",
                                                    "completion_per_million": "1"}, page=billing)  # fmt: skip
    assert r.status_code == 400 and "prompt_per_million must be a non-negative integer" in r.text

    name = admin.get(f"/admin/tenants/{t.id}").json()["name"]
    tenants = sql.scalar("SELECT count(*) FROM tenants")
    r = owner.post_form("/admin/dashboard/tenants", {"name": name})
    assert r.status_code == 409 and f"A tenant named {name!r} already exists" in r.text.replace("&#39;", "'")
    assert sql.scalar("SELECT count(*) FROM tenants") == tenants

    r = owner.post_form(f"{page}/limits", {"rpm_limit": "-3"}, page=page)
    assert r.status_code == 400 and "rpm_limit must be a positive integer, 0 for unlimited" in r.text
    r = owner.post_form(f"/admin/dashboard/keys/{t.key_id}/limits", {"rpm_limit": "0"}, page=page)
    assert r.status_code == 400 and "rpm_limit must be a positive integer, or null for unlimited" in r.text
    assert admin.get(f"/admin/tenants/{t.id}").json()["rpm_limit"] is None

    ops = "/admin/dashboard/operators"
    weak = {"name": "Weak", "email": f"weak-{secrets.token_hex(3)}@example.com", "role": "viewer", "password": "short"}
    r = owner.post_form(ops, weak, page=ops)
    assert r.status_code == 400 and "at least 12 characters" in r.text
    taken = {"name": "Again", "email": operators.viewer.upper(), "role": "viewer", "password": PASSWORD}
    r = owner.post_form(ops, taken, page=ops)
    assert r.status_code == 409 and "already an account" in r.text
    assert sql.scalar("SELECT count(*) FROM users WHERE email = $1", weak["email"]) == 0
    assert sql.scalar("SELECT count(*) FROM audit_log") == audit_rows  # nothing refused was recorded as done


# Every write route of the dashboard, and whether a billing operator may use it.
WRITES = [
    ("/admin/dashboard/tenants", False),
    ("/admin/dashboard/tenants/{tenant}/keys", False),
    ("/admin/dashboard/tenants/{tenant}/suspend", False),
    ("/admin/dashboard/tenants/{tenant}/resume", False),
    ("/admin/dashboard/tenants/{tenant}/limits", False),
    ("/admin/dashboard/keys/{key}/limits", False),
    ("/admin/dashboard/keys/{key}/revoke", False),
    ("/admin/dashboard/prices", False),
    ("/admin/dashboard/operators", False),
    ("/admin/dashboard/operators/{user}/password", False),
    ("/admin/dashboard/operators/{user}/disable", False),
    ("/admin/dashboard/operators/{user}/enable", False),
    ("/admin/dashboard/tenants/{tenant}/credits", True),
    ("/admin/dashboard/billing/close-period", True),
]
FORM = {"name": "x", "amount": "100", "period": "2001-02", "model": "tiny-base", "prompt_per_million": "1",
        "completion_per_million": "1", "email": "nobody@example.com", "role": "owner", "password": PASSWORD,
        "rpm_limit": "1"}  # fmt: skip


@pytest.fixture(scope="module")
def targets(make_tenant: Callable[[], TenantHandle], operators: Operators, sql: Sql) -> dict[str, str]:
    t = make_tenant()
    user = sql.scalar("SELECT id FROM users WHERE email = $1", operators.owner)
    return {"tenant": t.id, "key": t.key_id, "user": user}


DENIED = [("viewer", route) for route, _ in WRITES] + [("billing", route) for route, ok in WRITES if not ok]


@pytest.mark.parametrize(
    ("role", "route"), DENIED, ids=[f"{r}:{p.replace('/admin/dashboard/', '')}" for r, p in DENIED]
)
def test_roles_without_the_right_get_403_on_every_write(
    gateway: Any, operators: Operators, targets: dict[str, str], sql: Sql, role: str, route: str
) -> None:
    path = route.format(**targets)
    email = getattr(operators, role)
    done = "SELECT count(*) FROM audit_log WHERE actor = $1 AND action NOT LIKE 'signin%'"
    before = sql.scalar(done, f"operator:{email}")
    with Browser(gateway.url) as browser:
        assert browser.sign_in(email).status_code == 303
        r = browser.post_form(path, FORM)
        assert r.status_code == 403, (path, r.status_code, r.text[:300])
        assert f"Your role ({role}) may not do this" in r.text
    assert sql.scalar(done, f"operator:{email}") == before  # nothing was done in its name


def test_write_buttons_are_hidden_from_who_may_not_press_them(
    gateway: Any, operators: Operators, targets: dict[str, str]
) -> None:
    pages = [f"/admin/dashboard/tenants/{targets['tenant']}", "/admin", "/admin/dashboard/billing",
             "/admin/dashboard/operators"]  # fmt: skip
    owner_only = ["Create tenant", "Create key", "Suspend", "Save limits", "Set price", "Create operator",
                  "Reset password", "Disable", ">Revoke<"]  # fmt: skip
    billing_ok = ["Add credit", "Close period"]
    for role, hidden, shown in (("viewer", owner_only + billing_ok, []), ("billing", owner_only, billing_ok),
                                ("owner", [], owner_only + billing_ok)):  # fmt: skip
        with Browser(gateway.url) as browser:
            assert browser.sign_in(getattr(operators, role)).status_code == 303
            text = "".join(browser.http.get(p).text for p in pages)
        buttons = " ".join(re.findall(r"<button[^>]*>([^<]*)</button>", text))
        for name in hidden:
            assert name.strip("<>") not in buttons, (role, name)
        for name in shown:
            assert name.strip("<>") in buttons, (role, name)


def test_a_billing_operator_credits_and_closes_periods(
    gateway: Any, operators: Operators, make_tenant: Callable[[], TenantHandle], admin: httpx.Client, sql: Sql
) -> None:
    t = make_tenant()
    page = f"/admin/dashboard/tenants/{t.id}"
    with Browser(gateway.url) as browser:
        assert browser.sign_in(operators.billing).status_code == 303
        assert browser.post_form(f"{page}/credits", {"amount": "700"}, page=page).status_code == 303
        r = browser.post_form("/admin/dashboard/billing/close-period", {"period": "2001-03"},
                              page="/admin/dashboard/billing")  # fmt: skip
        assert r.status_code == 303
    assert admin.get(f"/admin/tenants/{t.id}/balance").json()["credit_balance"] == 700
    me = f"operator:{operators.billing}"
    assert actors(sql, "credit.add", t.id) == [me]
    assert actors(sql, "billing.close_period", "2001-03") == [me]


@pytest.fixture
def context(tmp_path: Path) -> Iterator[BrowserContext]:
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1440, "height": 900},
        )  # fmt: skip
        try:
            yield ctx
        finally:
            ctx.close()


def test_in_a_browser_an_owner_creates_a_tenant_and_a_key_by_labels(
    gateway: Any, operators: Operators, context: BrowserContext, admin: httpx.Client
) -> None:
    base = gateway.url
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(f"{base}/admin")
    page.get_by_label("E-mail").fill(operators.owner)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_url(f"{base}/admin")

    name = f"browser-{secrets.token_hex(4)}"
    page.get_by_label("Tenant name").fill(name)
    page.get_by_role("button", name="Create tenant").click()
    page.wait_for_url(re.compile(r"/admin/dashboard/tenants/"))
    assert f"Tenant {name} created" in page.get_by_role("status").inner_text()
    tenant_id = page.url.rsplit("/", 1)[1]

    page.get_by_label("Key name").fill("browser-key")
    page.get_by_role("button", name="Create key").click()
    field = page.get_by_label("New API key")
    field.wait_for()
    key = field.input_value()
    assert key and status_with(base, key) == 200
    page.get_by_role("button", name="Copy").click()
    page.get_by_role("button", name="Copied").wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == key
    page.screenshot(path=str(ARTIFACTS / "dashboard-new-key.png"), full_page=True)

    # (The audit log through the admin API: Playwright's event loop is running, the Sql helper would start one.)
    me = f"operator:{operators.owner}"
    [key_row] = admin.get(f"/admin/tenants/{tenant_id}/keys").json()["data"]
    for action, target in (("tenant.create", tenant_id), ("key.create", key_row["id"])):
        rows = admin.get("/admin/audit", params={"action": action, "target": target}).json()["data"]
        assert [r["actor"] for r in rows] == [me], action
    assert not errors, errors
