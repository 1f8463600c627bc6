"""Operators sign in to the dashboard with e-mail and password: server-side sessions that really end, expiry,
a new session id at every sign-in, throttled and audited failures, CSRF on every form, roles."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ARTIFACTS, TenantHandle
from tests.support.processes import GatewayProcess
from tests.support.signin import (
    CSRF_COOKIE,
    CSRF_INPUT,
    PASSWORD,
    SESSION_COOKIE,
    Browser,
    create_operator,
    operators_cli,
    session_id,
)
from tests.support.sql import Sql

LOCAL = "127.0.0.1"


@pytest.fixture(autouse=True)
def no_failures_from_here(sql: Sql) -> Iterator[None]:
    """Each test starts and ends without failed sign-ins from this machine's address (every test shares it)."""
    sql.fetch("DELETE FROM signin_failures WHERE ip = $1", LOCAL)
    yield
    sql.fetch("DELETE FROM signin_failures WHERE ip = $1", LOCAL)


def audit(sql: Sql, action: str, actor: str) -> list[dict[str, Any]]:
    return sql.fetch("SELECT actor, action, ip, detail FROM audit_log WHERE action = $1 AND actor = $2 ORDER BY id",
                     action, actor)  # fmt: skip


def models_status(gateway: Any, key: str) -> int:
    return httpx.get(f"{gateway.url}/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code


def test_an_operator_made_on_the_command_line_signs_in(gateway: Any, gateway_env: dict[str, str], sql: Sql) -> None:
    email = create_operator(gateway_env, "owner")
    row = sql.one("SELECT password_hash, role, tenant_id FROM users WHERE email = $1", email)
    assert row["password_hash"].startswith("$argon2id$v=19$") and PASSWORD not in row["password_hash"]
    assert (row["role"], row["tenant_id"]) == ("owner", None)
    listed = operators_cli(gateway_env, "list")
    assert listed.returncode == 0 and email in listed.stdout
    # The same e-mail in other case is taken; a short password is refused; neither creates anything.
    again = operators_cli(gateway_env, "create", "--email", email.upper(), "--name", "Again", "--password-stdin",
                          stdin=PASSWORD + "\n")  # fmt: skip
    assert again.returncode == 1 and "already an account" in again.stderr
    short = operators_cli(gateway_env, "create", "--email", "short-" + email, "--name", "Short", "--password-stdin",
                          stdin="eleven char\n")  # fmt: skip
    assert short.returncode == 1 and "at least 12 characters" in short.stderr
    assert sql.scalar("SELECT count(*) FROM users WHERE lower(email) IN ($1, $2)", email, "short-" + email) == 1

    with Browser(gateway.url) as browser:
        assert not browser.opens_dashboard()
        r = browser.sign_in(email.upper())  # e-mails are case-insensitive
        assert r.status_code == 303 and r.headers["location"] == "/admin"
        cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE + "="))
        flags = {part.strip().lower() for part in cookie.split(";")[1:]}
        assert {"httponly", "samesite=lax", "path=/admin"} <= flags and "secure" not in flags  # plain http here
        page = browser.http.get("/admin")
        assert page.status_code == 200 and f"Operator {email[3:11]}" in page.text
    [entry] = audit(sql, "signin", f"operator:{email}")
    assert entry["ip"] == LOCAL


def test_sign_out_ends_the_session_even_for_a_saved_cookie(gateway: Any, gateway_env: dict[str, str]) -> None:
    email = create_operator(gateway_env)
    with Browser(gateway.url) as browser:
        assert browser.sign_in(email).status_code == 303
        saved = browser.session
        assert saved and browser.opens_dashboard()
        r = browser.sign_out()
        assert r.status_code == 303 and r.headers["location"] == "/admin/login"
        assert not browser.opens_dashboard()
    with Browser(gateway.url) as thief:  # the cookie copied before sign-out, replayed after it
        thief.http.cookies.set(SESSION_COOKIE, saved, path="/admin")
        r = thief.http.get("/admin")
        assert r.status_code == 303 and r.headers["location"] == "/admin/login"


def test_every_sign_in_gets_a_new_session_id(gateway: Any, gateway_env: dict[str, str], sql: Sql) -> None:
    email = create_operator(gateway_env)
    with Browser(gateway.url) as browser:
        assert browser.sign_in(email).status_code == 303
        first = browser.session
        assert first
        # Signing in again, the old cookie is sent along: it is neither reused nor left open (fixation).
        assert browser.sign_in(email).status_code == 303
        second = browser.session
        assert second and second != first
        assert browser.opens_dashboard()
    with Browser(gateway.url) as planted:
        planted.http.cookies.set(SESSION_COOKIE, first, path="/admin")
        assert not planted.opens_dashboard()
    stored = {r["id"] for r in sql.fetch("SELECT id FROM sessions")}
    assert session_id(second) in stored and second not in stored  # only the token's hash is kept


def test_a_new_password_ends_the_other_sessions(gateway: Any, gateway_env: dict[str, str], sql: Sql) -> None:
    email = create_operator(gateway_env)
    new = "a different pass phrase"
    with Browser(gateway.url) as laptop, Browser(gateway.url) as phone:
        assert laptop.sign_in(email).status_code == 303 and phone.sign_in(email).status_code == 303
        before = laptop.session
        page = "/admin/dashboard/account"
        wrong = laptop.post_form(f"{page}/password", {"current_password": "not the password", "new_password": new,
                                                      "confirm_password": new}, page=page)  # fmt: skip
        assert wrong.status_code == 401 and "current password is wrong" in wrong.text
        weak = laptop.post_form(f"{page}/password", {"current_password": PASSWORD, "new_password": "too short",
                                                     "confirm_password": "too short"}, page=page)  # fmt: skip
        assert weak.status_code == 400 and "at least 12 characters" in weak.text
        assert phone.opens_dashboard()  # refused changes end nothing
        r = laptop.post_form(f"{page}/password", {"current_password": PASSWORD, "new_password": new,
                                                  "confirm_password": new}, page=page)  # fmt: skip
        assert r.status_code == 303
        assert laptop.session != before and r.headers["location"] == page
        assert "Password changed" in laptop.http.get(page).text  # this browser goes on, with a new session
        assert not phone.opens_dashboard()
        assert phone.sign_in(email).status_code == 401  # the old password
        assert phone.sign_in(email, new).status_code == 303
    assert len(audit(sql, "user.password_change", f"operator:{email}")) == 1


def test_disabling_or_resetting_an_operator_ends_its_sessions(gateway: Any, gateway_env: dict[str, str]) -> None:
    email = create_operator(gateway_env)
    with Browser(gateway.url) as browser:
        assert browser.sign_in(email).status_code == 303
        reset = operators_cli(gateway_env, "reset-password", "--email", email, "--password-stdin",
                              stdin="reset by the owner\n")  # fmt: skip
        assert reset.returncode == 0, reset.stderr
        assert not browser.opens_dashboard()
        assert browser.sign_in(email, "reset by the owner").status_code == 303
        assert operators_cli(gateway_env, "disable", "--email", email).returncode == 0
        assert not browser.opens_dashboard()
        refused = browser.sign_in(email, "reset by the owner")
        assert refused.status_code == 403 and "disabled" in refused.text
        assert operators_cli(gateway_env, "enable", "--email", email).returncode == 0
        assert browser.sign_in(email, "reset by the owner").status_code == 303


def test_sessions_expire_when_idle_and_after_their_lifetime(
    gateway: Any, gateway_env: dict[str, str], sql: Sql
) -> None:
    email = create_operator(gateway_env)
    with Browser(gateway.url) as browser:
        assert browser.sign_in(email).status_code == 303
        sid = session_id(browser.session or "")
        seen = sql.scalar("SELECT last_seen_at FROM sessions WHERE id = $1", sid)
        assert browser.opens_dashboard() and browser.opens_dashboard()
        # Used within the minute: last_seen_at is not rewritten on every request.
        assert sql.scalar("SELECT last_seen_at FROM sessions WHERE id = $1", sid) == seen
        sql.fetch("UPDATE sessions SET last_seen_at = now() - interval '2 minutes' WHERE id = $1", sid)
        assert browser.opens_dashboard()
        assert sql.scalar("SELECT now() - last_seen_at < interval '1 minute' FROM sessions WHERE id = $1", sid)
        # Unused for longer than SESSION_IDLE_MINUTES (60): over.
        sql.fetch("UPDATE sessions SET last_seen_at = now() - interval '61 minutes' WHERE id = $1", sid)
        assert not browser.opens_dashboard()

        assert browser.sign_in(email).status_code == 303
        sid = session_id(browser.session or "")
        lifetime = sql.scalar("SELECT expires_at - created_at FROM sessions WHERE id = $1", sid)
        assert lifetime.total_seconds() == 12 * 3600  # SESSION_MAX_HOURS
        sql.fetch("UPDATE sessions SET expires_at = now() - interval '1 second' WHERE id = $1", sid)
        assert not browser.opens_dashboard()  # however recently used


def test_failed_sign_ins_are_slowed_down_per_account_and_audited(
    gateway: Any, gateway_env: dict[str, str], sql: Sql
) -> None:
    email = create_operator(gateway_env)
    with Browser(gateway.url) as browser:
        first_failure = time.monotonic()
        for _ in range(5):
            r = browser.sign_in(email, "wrong password, again")
            assert r.status_code == 401 and "Wrong e-mail or password" in r.text
        started = time.monotonic()
        refused = browser.sign_in(email)  # the right password, but too late
        assert refused.status_code == 429 and "Too many failed sign-ins" in refused.text
        # until the first failure leaves the 15-minute window (the five may take a while on a loaded machine)
        since_first = time.monotonic() - first_failure
        assert 15 * 60 - since_first - 2 <= int(refused.headers["retry-after"]) <= 15 * 60
        assert time.monotonic() - started < 5  # refused at once, without checking the password
        assert browser.session is None
        # An unknown e-mail fails the same way (and is audited under what was typed).
        assert browser.sign_in("nobody-" + email, "wrong password, again").status_code == 401
    failed = audit(sql, "signin.failed", email)
    assert len(failed) == 5 and {e["ip"] for e in failed} == {LOCAL}
    [throttled] = audit(sql, "signin.throttled", email)
    assert json.loads(throttled["detail"])["retry_after_s"] > 15 * 60 - since_first - 2
    assert len(audit(sql, "signin.failed", "nobody-" + email)) == 1
    # Once the failures are older than the window (SIGNIN_FAILURE_WINDOW_MINUTES), the account may sign in.
    sql.fetch("UPDATE signin_failures SET at = at - interval '15 minutes' WHERE account = $1", email)
    with Browser(gateway.url) as browser:
        assert browser.sign_in(email).status_code == 303


def test_failed_sign_ins_are_slowed_down_per_address(gateway: Any, gateway_env: dict[str, str]) -> None:
    email = create_operator(gateway_env)
    with Browser(gateway.url) as browser:
        for n in range(20):  # SIGNIN_MAX_FAILURES_PER_ADDRESS, spread over accounts
            assert browser.sign_in(f"guess-{n}-{email}", "wrong password, again").status_code == 401
        assert browser.sign_in(email).status_code == 429
        assert browser.sign_in_with_token("x" * 40).status_code == 429


def test_admin_token_failures_are_audited(gateway: Any, admin_token: str, sql: Sql) -> None:
    before = len(audit(sql, "signin.failed", "admin-token"))
    with Browser(gateway.url) as browser:
        wrong = browser.sign_in_with_token("not-the-admin-token-but-long-enough")
        assert wrong.status_code == 401 and "admin token is wrong" in wrong.text
        assert browser.sign_in_with_token(admin_token).status_code == 303
        assert browser.opens_dashboard()
    assert len(audit(sql, "signin.failed", "admin-token")) == before + 1


def test_forms_need_their_csrf_token_and_the_apis_do_not(
    gateway: Any, gateway_env: dict[str, str], admin_token: str, make_tenant: Any
) -> None:
    t: TenantHandle = make_tenant()
    email = create_operator(gateway_env)
    revoke = f"/admin/dashboard/keys/{t.key_id}/revoke"
    with Browser(gateway.url) as browser:
        token = browser.csrf()
        assert browser.http.post("/admin/login", data={"email": email, "password": PASSWORD}).status_code == 403
        assert browser.session is None
        assert browser.http.post("/admin/login", data={"_csrf_token": token, "email": email,
                                                       "password": PASSWORD}).status_code == 303  # fmt: skip
        for data in ({}, {"_csrf_token": "forged"}, {"_csrf_token": token[:-1] + "0"}):
            r = browser.http.post(revoke, data=data)
            assert r.status_code == 403 and "CSRF" in r.text
        assert browser.http.post("/admin/logout", data={}).status_code == 403
        assert browser.opens_dashboard()  # the forged sign-out ended nothing
        # Another site's form would carry no token: the session cookie alone does nothing.
        assert browser.http.post(revoke, data={"_csrf_token": ""}).status_code == 403
    assert models_status(gateway, t.key) == 200
    # Bearer APIs need no CSRF token: the admin API, the OpenAI API.
    bearer = {"Authorization": f"Bearer {admin_token}"}
    assert (
        httpx.post(f"{gateway.url}/admin/tenants", json={"name": f"no-csrf-{t.id}"}, headers=bearer).status_code == 201
    )
    body = {"model": "tiny-base", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    assert httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=t.headers, timeout=60).status_code == 200


def test_a_viewer_or_billing_operator_cannot_revoke_and_an_owner_is_audited_by_name(
    gateway: Any, gateway_env: dict[str, str], make_tenant: Any, sql: Sql
) -> None:
    t: TenantHandle = make_tenant()
    page, revoke = f"/admin/dashboard/tenants/{t.id}", f"/admin/dashboard/keys/{t.key_id}/revoke"
    for role in ("viewer", "billing"):
        with Browser(gateway.url) as browser:
            assert browser.sign_in(create_operator(gateway_env, role)).status_code == 303
            shown = browser.http.get(page)
            assert shown.status_code == 200 and 'class="btn btn-danger">Revoke' not in shown.text
            r = browser.post_form(revoke, {}, page=page)
            assert r.status_code == 403 and f"Your role ({role}) may not do this" in r.text
    assert models_status(gateway, t.key) == 200
    owner = create_operator(gateway_env, "owner")
    with Browser(gateway.url) as browser:
        assert browser.sign_in(owner).status_code == 303
        assert 'class="btn btn-danger">Revoke' in browser.http.get(page).text
        r = browser.post_form(revoke, {}, page=page)
        assert r.status_code == 303 and r.headers["location"] == page
        assert "revoked" in browser.http.get(page).text
    assert models_status(gateway, t.key) == 401
    assert [e["actor"] for e in sql.fetch("SELECT actor FROM audit_log WHERE action = 'key.revoke' AND target = $1",
                                          t.key_id)] == [f"operator:{owner}"]  # fmt: skip


def _sign_in_over_http(base: str, form: dict[str, str]) -> httpx.Response:
    """A sign-in whose cookies are sent by hand: an http client keeps Secure cookies to itself, as it should."""
    page = httpx.get(f"{base}/admin/login")
    found = CSRF_INPUT.search(page.text)
    assert found and page.cookies.get(CSRF_COOKIE)
    return httpx.post(f"{base}/admin/login", data={"_csrf_token": found.group(1), **form},
                      headers={"Cookie": f"{CSRF_COOKIE}={page.cookies[CSRF_COOKIE]}"})  # fmt: skip


def test_no_password_or_session_token_in_the_logs_and_secure_cookies_when_forced(
    gateway_env: dict[str, str], admin_token: str
) -> None:
    """A gateway that logs every SQL statement with its parameters (DATABASE_ECHO) and forces Secure cookies."""
    log = ARTIFACTS / "gateway-echo.log"
    log.unlink(missing_ok=True)
    gw = GatewayProcess({**gateway_env, "DATABASE_ECHO": "true", "SESSION_COOKIE_SECURE": "true"}, log)
    gw.start()
    try:
        email = create_operator(gateway_env)
        assert _sign_in_over_http(gw.url, {"email": email, "password": "a wrong pass phrase"}).status_code == 401
        r = _sign_in_over_http(gw.url, {"email": email, "password": PASSWORD})
        assert r.status_code == 303
        [cookie] = [c for c in r.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE + "=")]
        assert "secure" in cookie.lower().split("; ")  # SESSION_COOKIE_SECURE=true, though the request was http
        token = cookie.split(";")[0].split("=", 1)[1]
        assert _sign_in_over_http(gw.url, {"token": admin_token + "x"}).status_code == 401
        assert _sign_in_over_http(gw.url, {"token": admin_token}).status_code == 303
    finally:
        gw.stop()
    text = Path(log).read_text()
    assert "INSERT INTO sessions" in text and "FROM users" in text  # the statements were logged, parameters too
    for secret in (PASSWORD, "a wrong pass phrase", token, admin_token):
        assert secret not in text
