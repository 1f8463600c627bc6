"""The tenant's side: sign-up in each SIGNUP_MODE and its limit per address, approval and rejection (admin API
and dashboard, by role), console sign-in that tells a pending/rejected/suspended tenant why, self-serve keys and
their scopes, the cross-tenant probe, CSRF, and no secret in the logs."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ARTIFACTS, TenantHandle
from tests.support.adapters import read_adapter, tar_gz
from tests.support.console import Console, new_email
from tests.support.processes import GatewayProcess
from tests.support.signin import PASSWORD, Browser, create_operator
from tests.support.sql import Sql

TRIAL = 1_000_000  # BILLING_TRIAL_TOKENS' default
SECRETS_SEEN: list[str] = []  # passwords, keys and session tokens the tests used; none may be in the logs


def tenant_of(sql: Sql, email: str) -> dict[str, Any]:
    return sql.one("SELECT t.id, t.status, u.role FROM users u JOIN tenants t ON t.id = u.tenant_id "
                   "WHERE u.email = $1", email)  # fmt: skip


def trial_left(admin: httpx.Client, tenant_id: str) -> int:
    return int(admin.get(f"/admin/tenants/{tenant_id}").json()["trial_tokens_remaining"])


def actions(sql: Sql, target: str) -> list[str]:
    return [r["action"] for r in sql.fetch("SELECT action FROM audit_log WHERE target = $1 ORDER BY id", target)]


def signed_up(gateway: Any, sql: Sql) -> tuple[Console, str, str]:
    """A fresh applicant (approval mode): its console, e-mail and pending tenant id."""
    console, email = Console(gateway.url), new_email()
    r = console.sign_up(email)
    assert r.status_code == 200 and "awaits an operator" in r.text, r.text[:500]
    return console, email, tenant_of(sql, email)["id"]


def approved(gateway: Any, sql: Sql, admin: httpx.Client) -> tuple[Console, str, str]:
    console, email, tenant_id = signed_up(gateway, sql)
    assert admin.post(f"/admin/tenants/{tenant_id}/approve").status_code == 200
    assert console.sign_in(email).status_code == 303
    return console, email, tenant_id


def test_approval_mode_signup_waits_for_the_operator(gateway: Any, admin: httpx.Client, sql: Sql) -> None:
    console, email, tenant_id = signed_up(gateway, sql)
    assert tenant_of(sql, email) == {"id": tenant_id, "status": "pending", "role": "owner"}
    hashed = sql.scalar("SELECT password_hash FROM users WHERE email = $1", email)
    assert hashed.startswith("$argon2id$") and PASSWORD not in hashed
    # No billing account (so no trial tokens) until approval; the operator sees the application.
    assert sql.scalar("SELECT count(*) FROM billing_accounts WHERE tenant_id = $1", tenant_id) == 0
    pending = admin.get("/admin/tenants", params={"status": "pending"}).json()["data"]
    assert tenant_id in {t["id"] for t in pending} and all(t["status"] == "pending" for t in pending)
    assert tenant_id not in {t["id"] for t in admin.get("/admin/tenants", params={"status": "active"}).json()["data"]}
    # A pending tenant cannot sign in, and is told why; nor can keys an operator made for it be used.
    refused = console.sign_in(email)
    assert refused.status_code == 403 and "waiting for an operator" in refused.text and console.session is None
    key = admin.post(f"/admin/tenants/{tenant_id}/keys", json={"name": "early"}).json()["key"]
    r = httpx.get(f"{gateway.url}/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "account_pending"
    # Approval: active, with the trial tokens, audited; only once.
    r = admin.post(f"/admin/tenants/{tenant_id}/approve")
    assert r.status_code == 200 and r.json()["status"] == "active", r.text
    assert trial_left(admin, tenant_id) == TRIAL
    assert httpx.get(f"{gateway.url}/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    again = admin.post(f"/admin/tenants/{tenant_id}/approve")
    assert again.status_code == 409 and again.json()["error"]["code"] == "not_pending"
    assert admin.post("/admin/tenants/tnt_missing/approve").status_code == 404
    assert actions(sql, tenant_id) == ["tenant.signup", "tenant.approve"]
    # Now it signs in; signing in again gives a new session id and ends the old one (fixation).
    assert console.sign_in(email).status_code == 303
    first = console.session
    assert first and console.sign_in(email).status_code == 303
    assert console.session not in (None, first)
    with Console(gateway.url) as thief:
        thief.http.cookies.set("gw_console_session", first, path="/console")
        assert thief.http.get("/console").status_code == 303
    page = console.http.get("/console")
    assert page.status_code == 200 and "Trial tokens left" in page.text and "1,000,000" in page.text
    SECRETS_SEEN.extend([key, console.session or ""])


def test_rejected_applicants_cannot_sign_in(gateway: Any, admin: httpx.Client, sql: Sql) -> None:
    console, email, tenant_id = signed_up(gateway, sql)
    r = admin.post(f"/admin/tenants/{tenant_id}/reject")
    assert r.status_code == 200 and r.json()["status"] == "rejected"
    assert admin.post(f"/admin/tenants/{tenant_id}/approve").status_code == 409
    refused = console.sign_in(email)
    assert refused.status_code == 403 and "not approved" in refused.text and console.session is None
    assert sql.scalar("SELECT count(*) FROM billing_accounts WHERE tenant_id = $1", tenant_id) == 0
    assert actions(sql, tenant_id) == ["tenant.signup", "tenant.reject"]


def test_an_operator_resets_a_tenant_users_password(
    gateway: Any, admin: httpx.Client, sql: Sql, make_tenant: Any
) -> None:
    console, email, tenant_id = approved(gateway, sql, admin)
    users = admin.get(f"/admin/tenants/{tenant_id}/users").json()["data"]
    assert [(u["email"], u["role"]) for u in users] == [(email, "owner")] and "password_hash" not in users[0]
    user_id = users[0]["id"]
    other = make_tenant()  # another tenant's id with this user: the same 404 as a missing user
    assert admin.post(f"/admin/tenants/{other.id}/users/{user_id}/reset-password").status_code == 404
    assert admin.get("/admin/tenants/tnt_missing/users").status_code == 404
    r = admin.post(f"/admin/tenants/{tenant_id}/users/{user_id}/reset-password")
    assert r.status_code == 200 and r.json()["email"] == email, r.text
    new = r.json()["password"]
    assert len(new) >= 12
    assert console.http.get("/console").status_code == 303  # its session ended with the old password
    with Console(gateway.url) as fresh:
        assert fresh.sign_in(email).status_code != 303  # the old password no longer works
        assert fresh.sign_in(email, new).status_code == 303
    assert actions(sql, user_id)[-1] == "user.password_reset"


def test_a_suspended_tenant_is_signed_out_and_told_why(gateway: Any, admin: httpx.Client, sql: Sql) -> None:
    console, email, tenant_id = approved(gateway, sql, admin)
    assert console.http.get("/console/keys").status_code == 200
    assert admin.patch(f"/admin/tenants/{tenant_id}", json={"suspended": True}).status_code == 200
    assert console.http.get("/console/keys").status_code == 303  # the live session no longer opens the console
    refused = console.sign_in(email)
    assert refused.status_code == 403 and "suspended" in refused.text


@pytest.mark.parametrize(
    ("fields", "message", "param"),
    [
        ({"email": "not-an-address"}, "Enter a valid e-mail address.", "email"),
        ({"password": "too-short"}, "at least 12 characters", "password"),
        ({"name": "   "}, "Enter a name", "name"),
    ],
)
def test_bad_signups_are_told_why_and_create_nothing(
    gateway: Any, sql: Sql, fields: dict[str, str], message: str, param: str
) -> None:
    before = sql.scalar("SELECT count(*) FROM tenants")
    with Console(gateway.url) as console:
        data = {"name": "Ada", "email": new_email(), "password": PASSWORD, **fields}
        r = console.post_form("/console/signup", data, page="/console/signup")
    assert r.status_code == 400 and message in r.text, r.text[:800]
    assert re.search(rf'id="{param}"[^>]*aria-invalid="true"', r.text)
    assert sql.scalar("SELECT count(*) FROM tenants") == before


def test_a_taken_email_is_refused_in_any_case(gateway: Any, sql: Sql) -> None:
    _, email, _ = signed_up(gateway, sql)
    before = sql.scalar("SELECT count(*) FROM tenants")
    with Console(gateway.url) as console:
        r = console.sign_up(email.upper())
    assert r.status_code == 409 and "already an account" in r.text
    assert sql.scalar("SELECT count(*) FROM tenants") == before
    refusals = sql.fetch("SELECT detail FROM audit_log WHERE action = 'signup.refused' AND actor = $1", f"user:{email}")
    assert refusals and "email_taken" in str(refusals[-1]["detail"])


def test_signups_per_address_are_limited(gateway: Any, sql: Sql) -> None:
    with Console(gateway.url) as console:
        for _ in range(5):  # SIGNUP_PER_ADDRESS_PER_HOUR's default
            assert console.sign_up(new_email()).status_code == 200
        before = sql.scalar("SELECT count(*) FROM tenants")
        r = console.sign_up(new_email())
        assert r.status_code == 429 and "Too many sign-ups" in r.text and r.headers["Retry-After"]
        assert sql.scalar("SELECT count(*) FROM tenants") == before
    with Console(gateway.url) as elsewhere:  # another address is not held back
        assert elsewhere.sign_up(new_email()).status_code == 200


@pytest.fixture(scope="module")
def gateways_by_mode(gateway_env: dict[str, str]) -> Iterator[dict[str, GatewayProcess]]:
    started = {}
    try:
        for mode in ("open", "closed"):
            started[mode] = GatewayProcess(
                {**gateway_env, "SIGNUP_MODE": mode}, ARTIFACTS / f"gateway-signup-{mode}.log"
            )
            started[mode].start()
        yield started
    finally:
        for gw in started.values():
            gw.stop()


def test_open_mode_is_active_at_once_with_the_trial(
    gateways_by_mode: dict[str, GatewayProcess], admin: httpx.Client, sql: Sql
) -> None:
    with Console(gateways_by_mode["open"].url) as console:
        email = new_email()
        r = console.sign_up(email)
        assert r.status_code == 200 and "is ready" in r.text
        tenant = tenant_of(sql, email)
        assert tenant["status"] == "active" and trial_left(admin, tenant["id"]) == TRIAL
        assert console.sign_in(email).status_code == 303 and console.http.get("/console").status_code == 200


def test_closed_mode_creates_nothing(gateways_by_mode: dict[str, GatewayProcess], sql: Sql) -> None:
    before = sql.scalar("SELECT count(*) FROM tenants")
    with Console(gateways_by_mode["closed"].url) as console:
        assert "Sign-up is closed" in console.http.get("/console/signup").text  # and no form
        data = {"name": "Ada", "email": new_email(), "password": PASSWORD}
        r = console.post_form("/console/signup", data, page="/console/login")
    assert r.status_code == 403 and "Sign-up is closed" in r.text
    assert sql.scalar("SELECT count(*) FROM tenants") == before


def test_owners_approve_on_the_dashboard_and_others_may_not(
    gateway: Any, gateway_env: dict[str, str], sql: Sql
) -> None:
    _, email, tenant_id = signed_up(gateway, sql)
    for role in ("viewer", "billing"):
        with Browser(gateway.url) as op:
            assert op.sign_in(create_operator(gateway_env, role)).status_code == 303
            assert email in op.http.get("/admin").text  # everyone sees the applications
            r = op.post_form(f"/admin/dashboard/applications/{tenant_id}/approve", {})
            assert r.status_code == 403, r.text[:300]
    assert tenant_of(sql, email)["status"] == "pending"
    with Browser(gateway.url) as owner:
        owner_email = create_operator(gateway_env, "owner")
        assert owner.sign_in(owner_email).status_code == 303
        overview = owner.http.get("/admin").text
        assert 'id="applications"' in overview and f"Approve {email}" in overview
        assert owner.http.post(f"/admin/dashboard/applications/{tenant_id}/approve").status_code == 403  # no CSRF
        r = owner.post_form(f"/admin/dashboard/applications/{tenant_id}/approve", {})
        assert r.status_code == 303 and "approved" in owner.http.get("/admin").text
    assert tenant_of(sql, email)["status"] == "active"
    assert sql.scalar("SELECT actor FROM audit_log WHERE target = $1 AND action = 'tenant.approve'",
                      tenant_id) == f"operator:{owner_email}"  # fmt: skip


def new_key(gateway: Any, headers: dict[str, str], **body: Any) -> httpx.Response:
    return httpx.post(f"{gateway.url}/v1/keys", headers=headers, json=body)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_self_serve_keys_and_their_scopes(gateway: Any, make_tenant: Any, models_dir: Path, sql: Sql) -> None:
    tenant: TenantHandle = make_tenant()  # an operator's key: every scope, as before scopes existed
    r = new_key(gateway, tenant.headers, name="ci", expires_at="2999-01-01T00:00:00Z")
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["key"].startswith("sk-") and made["key"].startswith(made["prefix"]) and made["id"].startswith("key_")
    assert made["scopes"] == ["inference", "deployments", "billing"]  # the default: no minting more keys
    listed = httpx.get(f"{gateway.url}/v1/keys", headers=tenant.headers).json()["data"]
    assert {k["id"] for k in listed} >= {tenant.key_id, made["id"]}
    assert all("key" not in k and "key_hash" not in k for k in listed)
    assert httpx.get(f"{gateway.url}/v1/models", headers=bearer(made["key"])).status_code == 200
    # Without the `keys` scope: no listing, minting or revoking keys.
    for call in (
        lambda h: httpx.get(f"{gateway.url}/v1/keys", headers=h),
        lambda h: new_key(gateway, h, name="more"),
        lambda h: httpx.delete(f"{gateway.url}/v1/keys/{tenant.key_id}", headers=h),
    ):
        denied = call(bearer(made["key"]))
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "missing_scope"
    # An inference-only key cannot upload or delete adapters either.
    inference = new_key(gateway, tenant.headers, name="inf", scopes=["inference"]).json()["key"]
    files = read_adapter(models_dir / "adapters" / "lora-1")
    up = httpx.post(f"{gateway.url}/v1/adapters", headers=bearer(inference), data={"name": "nope"},
                    files={"adapter.tar.gz": ("adapter.tar.gz", tar_gz(files))}, timeout=60)  # fmt: skip
    assert up.status_code == 403 and up.json()["error"]["code"] == "missing_scope"
    gone = httpx.delete(f"{gateway.url}/v1/adapters/mif-whatever", headers=bearer(inference))
    assert gone.status_code == 403 and gone.json()["error"]["code"] == "missing_scope"
    # ... nor read the bill or charge the card on file (the `billing` scope).
    for method, path in (("GET", "/v1/balance"), ("GET", "/v1/usage"), ("POST", "/v1/billing/topups")):
        r = httpx.request(method, f"{gateway.url}{path}", headers=bearer(inference), json={"amount": 1000})
        assert r.status_code == 403 and r.json()["error"]["code"] == "missing_scope", (path, r.text)
    # A key may not give scopes it lacks; unknown scopes are a 400.
    keys_only = new_key(gateway, tenant.headers, name="k", scopes=["keys"]).json()["key"]
    beyond = new_key(gateway, bearer(keys_only), scopes=["keys", "billing"])
    assert beyond.status_code == 403 and beyond.json()["error"]["code"] == "missing_scope"
    assert new_key(gateway, tenant.headers, scopes=["root"]).status_code == 400
    # A key without `inference` cannot chat.
    chat = httpx.post(f"{gateway.url}/v1/chat/completions", headers=bearer(keys_only),
                      json={"model": "x", "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
    assert chat.status_code == 403 and chat.json()["error"]["code"] == "missing_scope"
    # Revoke: 204, then the key is dead; the existing (all-scope) key kept working throughout.
    assert httpx.delete(f"{gateway.url}/v1/keys/{made['id']}", headers=tenant.headers).status_code == 204
    assert httpx.get(f"{gateway.url}/v1/models", headers=bearer(made["key"])).status_code == 401
    assert sql.scalar("SELECT scopes FROM api_keys WHERE id = $1", tenant.key_id) == [
        "inference", "deployments", "keys", "billing"]  # fmt: skip
    assert actions(sql, made["id"]) == ["key.create", "key.revoke"]
    SECRETS_SEEN.extend([made["key"], inference, keys_only])


def _probe_body(r: httpx.Response, ident: str) -> str:
    return r.text.replace(ident, "<id>")


def test_another_tenants_ids_answer_like_missing_ones(gateway: Any, make_tenant: Any, admin: httpx.Client,
                                                     sql: Sql) -> None:  # fmt: skip
    other: TenantHandle = make_tenant()
    mine: TenantHandle = make_tenant()
    missing = "key_doesnotexist000000"
    for ident in (other.key_id, missing):
        assert httpx.delete(f"{gateway.url}/v1/keys/{ident}", headers=mine.headers).status_code == 404
    a = httpx.delete(f"{gateway.url}/v1/keys/{other.key_id}", headers=mine.headers)
    b = httpx.delete(f"{gateway.url}/v1/keys/{missing}", headers=mine.headers)
    assert _probe_body(a, other.key_id) == _probe_body(b, missing)
    assert other.key_id not in {
        k["id"] for k in httpx.get(f"{gateway.url}/v1/keys", headers=mine.headers).json()["data"]
    }
    # The console: another tenant's key id is the same 404 page as a missing one, and nothing is revoked.
    console, _, _ = approved(gateway, sql, admin)
    pages = [
        console.post_form(f"/console/keys/{ident}/revoke", {}, page="/console/keys")
        for ident in (other.key_id, missing)
    ]
    assert [p.status_code for p in pages] == [404, 404]
    assert _probe_body(pages[0], other.key_id) == _probe_body(pages[1], missing)
    assert sql.scalar("SELECT revoked_at FROM api_keys WHERE id = $1", other.key_id) is None
    assert other.key_id not in console.http.get("/console/keys").text


def test_console_keys_page_creates_shows_once_and_revokes(gateway: Any, admin: httpx.Client, sql: Sql) -> None:
    console, _, tenant_id = approved(gateway, sql, admin)
    r = console.post_form("/console/keys", {"name": "laptop", "expires_at": "2999-12-31"}, page="/console/keys")
    assert r.status_code == 200, r.text[:500]
    shown = re.search(r'id="new-key-value"[^>]*value="(sk-[^"]+)"', r.text)
    assert shown, r.text[:2000]
    key = shown.group(1)
    assert key not in console.http.get("/console/keys").text  # shown once
    assert httpx.get(f"{gateway.url}/v1/models", headers=bearer(key)).status_code == 200
    key_id = sql.scalar("SELECT id FROM api_keys WHERE tenant_id = $1 AND name = 'laptop'", tenant_id)
    assert console.post_form(f"/console/keys/{key_id}/revoke", {}, page="/console/keys").status_code == 303
    assert httpx.get(f"{gateway.url}/v1/models", headers=bearer(key)).status_code == 401
    SECRETS_SEEN.append(key)


def test_console_posts_need_the_csrf_token(gateway: Any, admin: httpx.Client, sql: Sql) -> None:
    console, email, tenant_id = approved(gateway, sql, admin)
    before = sql.scalar("SELECT count(*) FROM api_keys WHERE tenant_id = $1", tenant_id)
    for path, data in (("/console/keys", {"name": "x"}), ("/console/signup", {"name": "x", "email": new_email(),
                       "password": PASSWORD}), ("/console/login", {"email": email, "password": PASSWORD}),
                       ("/console/logout", {}), ("/console/account/password", {})):  # fmt: skip
        assert console.http.post(path, data=data).status_code == 403, path
    assert sql.scalar("SELECT count(*) FROM api_keys WHERE tenant_id = $1", tenant_id) == before
    assert console.http.get("/console").status_code == 200  # still signed in: the logout without a token did nothing


def test_console_usage_and_invoices_show_the_api_numbers(gateway: Any, admin: httpx.Client, sql: Sql) -> None:
    console, _, tenant_id = approved(gateway, sql, admin)
    key = admin.post(f"/admin/tenants/{tenant_id}/keys", json={"name": "u"}).json()["key"]
    base = httpx.get(f"{gateway.url}/v1/models", headers=bearer(key)).json()["data"][0]["id"]
    r = httpx.post(f"{gateway.url}/v1/chat/completions", headers=bearer(key), timeout=120,
                   json={"model": base, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5})  # fmt: skip
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    for _ in range(100):  # the charge is group-committed shortly after the answer
        api = httpx.get(f"{gateway.url}/v1/usage", headers=bearer(key)).json()["data"]
        if api:
            break
        time.sleep(0.1)
    assert [(u["prompt_tokens"], u["completion_tokens"]) for u in api] == [
        (usage["prompt_tokens"], usage["completion_tokens"])]  # fmt: skip
    page = console.http.get("/console/usage").text
    assert f'id="total-prompt">{usage["prompt_tokens"]}<' in page
    assert f'id="total-completion">{usage["completion_tokens"]}<' in page
    csv = console.http.get("/console/usage.csv")
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.text.splitlines()[1].split(",")[1:5] == [base, "1", str(usage["prompt_tokens"]),
                                                        str(usage["completion_tokens"])]  # fmt: skip
    assert console.http.get("/console/invoices").status_code == 200
    SECRETS_SEEN.append(key)


def test_the_playground_goes_through_the_proxy_and_is_marked(gateway: Any, admin: httpx.Client, sql: Sql) -> None:
    console, _, tenant_id = approved(gateway, sql, admin)
    page = console.http.get("/console/playground")
    assert page.status_code == 200
    base = re.search(r'<optgroup label="Base models"><option value="([^"]+)"', page.text)
    assert base, page.text[:2000]
    token = re.search(r'name="_csrf_token" value="([^"]+)"', page.text)
    assert token
    body = {"model": base.group(1), "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 6,
            "temperature": 0}  # fmt: skip
    assert console.http.post("/console/playground/chat", json=body).status_code == 403  # no CSRF token
    r = console.http.post("/console/playground/chat", json=body, headers={"X-CSRFToken": token.group(1)})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream"), r.text[:300]
    chunks = [json.loads(line[5:]) for line in r.text.splitlines() if line.startswith("data:") and "[DONE]" not in line]
    usage = next(c["usage"] for c in chunks if c.get("usage"))
    request_id = r.headers["x-request-id"]
    for _ in range(100):
        cost = console.http.get(f"/console/playground/cost/{request_id}").json()
        if cost["found"]:
            break
        time.sleep(0.1)
    assert (cost["prompt_tokens"], cost["completion_tokens"]) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert cost["trial_tokens_used"] == usage["prompt_tokens"] + usage["completion_tokens"]  # billed to the trial
    row = sql.one("SELECT source, tenant_id, prompt_tokens FROM usage_records WHERE request_id = $1", request_id)
    assert row == {"source": "playground", "tenant_id": tenant_id, "prompt_tokens": usage["prompt_tokens"]}
    # The playground's key is the console's own: not listed, not revocable, unusable from outside.
    key_id = sql.scalar("SELECT api_key_id FROM usage_records WHERE request_id = $1", request_id)
    assert key_id not in console.http.get("/console/keys").text
    gone = console.post_form(f"/console/keys/{key_id}/revoke", {}, page="/console/keys")
    assert gone.status_code == 404
    # Another tenant cannot read this reply's cost.
    other, _, _ = approved(gateway, sql, admin)
    assert other.http.get(f"/console/playground/cost/{request_id}").json() == {"found": False}


def test_no_password_session_or_key_in_the_logs() -> None:
    assert SECRETS_SEEN, "run with the tests above"
    text = "".join(p.read_text(errors="replace") for p in ARTIFACTS.glob("gateway*.log"))
    assert PASSWORD not in text
    leaked = [s[:10] for s in SECRETS_SEEN if s and s in text]
    assert not leaked, leaked
