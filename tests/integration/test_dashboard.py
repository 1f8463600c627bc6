"""The admin dashboard in a real browser (Debian's chromium via Playwright) against the real gateway and engine."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, sync_playwright

from gateway.dashboard.session import COOKIE
from tests.conftest import ARTIFACTS, TenantHandle
from tests.support.browser import CHROMIUM_ARGS, chromium_path

CHARTS = ["chart-tokens", "chart-cost", "chart-requests", "chart-tenants", "chart-models"]
# Every chart has datasets of the right length, and at least one point above zero.
CHARTS_DRAWN = """ids => ids.every(id => {
    const c = window.Chart && Chart.getChart(id);
    return c && c.data.datasets.length > 0 && c.data.datasets.every(d => d.data.length > 0)
        && c.data.datasets.some(d => d.data.some(v => v > 0));
})"""
# Coloured pixels on the canvas: the chart really painted, not only holds data.
PAINTED = """id => {
    const c = document.getElementById(id), ctx = c.getContext('2d');
    const px = ctx.getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < px.length; i += 4) if (px[i + 3] > 0 && !(px[i] === px[i + 1] && px[i + 1] === px[i + 2])) n++;
    return n;
}"""


@pytest.fixture
def context(tmp_path: Path) -> Iterator[BrowserContext]:
    """A fresh chromium profile per test."""
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=chromium_path(),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1440, "height": 900},
        )
        try:
            yield ctx
        finally:
            ctx.close()


@pytest.fixture
def visited(context: BrowserContext) -> list[str]:
    """Every URL the browser asked for, page loads and sub-resources alike."""
    urls: list[str] = []
    context.on("request", lambda r: urls.append(r.url))
    return urls


def sign_in(page: Page, base: str, token: str) -> None:
    """The first owner's way in: the admin token, under the operators' e-mail and password form."""
    page.goto(f"{base}/admin")
    assert page.url == f"{base}/admin/login"
    page.click("text=Sign in with the admin token")
    page.fill("#token", token)
    page.click("#token-form button[type=submit]")


def chat(base: str, key: str, model: str, max_tokens: int = 8, content: str = "Who are you?") -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens}
    return httpx.post(f"{base}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, json=body, timeout=60)


def models_status(base: str, key: str) -> int:
    return httpx.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code


def test_dashboard_signs_in_shows_real_usage_and_revokes_a_key(
    gateway: Any,
    admin: httpx.Client,
    admin_token: str,
    make_tenant: Callable[[], TenantHandle],
    register_adapter: Any,
    context: BrowserContext,
    visited: list[str],
) -> None:
    base = gateway.url
    t = make_tenant()
    # A prepaid tenant without trial, and a price on its deployment, so the cost chart has real charges.
    admin.patch(f"/admin/tenants/{t.id}", json={"name": f"dash-{t.id[-6:]}"})
    paying = admin.post("/admin/tenants", json={"name": f"dash-pay-{t.id[-6:]}", "billing_mode": "prepaid",
                                                "trial_tokens": 0}).json()  # fmt: skip
    assert admin.post(f"/admin/tenants/{paying['id']}/credits", json={"amount": 2500}).status_code == 201
    paying_key = admin.post(f"/admin/tenants/{paying['id']}/keys", json={"name": "prod"}).json()["key"]
    priced = register_adapter(paying["id"], "dash-priced", 2)
    price = {"model": priced["id"], "prompt_per_million": 50_000, "completion_per_million": 150_000}
    assert admin.post("/admin/prices", json=price).status_code == 201
    for _ in range(3):
        assert chat(base, paying_key, "dash-priced").status_code == 200

    doomed = admin.post(f"/admin/tenants/{t.id}/keys", json={"name": "doomed"}).json()
    register_adapter(t.id, "dash-lora", 1)
    for key in (t.key, doomed["key"]):
        for model in ("tiny-base", "dash-lora", "dash-lora"):
            assert chat(base, key, model).status_code == 200
    # A prompt longer than the context: the engine refuses it, which leaves an error row for the error rate.
    assert chat(base, t.key, "tiny-base", content="story " * 3000).status_code == 400

    page = context.new_page()
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.on("dialog", lambda d: d.accept())
    sign_in(page, base, admin_token)
    assert page.url == f"{base}/admin"

    page.wait_for_function(CHARTS_DRAWN, arg=CHARTS, timeout=15_000)
    page.wait_for_timeout(600)  # the charts' entry animation
    for chart in CHARTS:
        assert page.evaluate(PAINTED, chart) > 200, chart
    assert page.locator(f"#tenants a[href='/admin/dashboard/tenants/{t.id}']").count() == 1
    paying_row = page.locator("#tenants tr", has=page.locator(f"a[href='/admin/dashboard/tenants/{paying['id']}']"))
    assert "$24." in paying_row.inner_text()  # $25.00 credit less the charges, formatted as money
    assert page.locator("#error-rate .kpi-value").inner_text() != "0.0%"
    assert int(page.locator("#live .kpi-value").inner_text().split()[0].replace(",", "")) >= 1
    page.screenshot(path=str(ARTIFACTS / "dashboard-overview.png"), full_page=True)

    page.click(f"#tenants a[href='/admin/dashboard/tenants/{t.id}']")
    page.wait_for_url(f"{base}/admin/dashboard/tenants/{t.id}")
    page.wait_for_function(CHARTS_DRAWN, arg=["chart-tokens", "chart-requests"], timeout=15_000)
    page.wait_for_timeout(600)
    assert page.locator("#recent tbody tr").count() == 7
    assert page.locator("#deployments tbody tr").count() == 1
    assert page.locator("#keys tbody tr").count() == 2
    page.screenshot(path=str(ARTIFACTS / "dashboard-tenant.png"), full_page=True)

    assert models_status(base, doomed["key"]) == 200
    page.click(f"#keys tr[data-key-id='{doomed['id']}'] button")
    page.wait_for_url(f"{base}/admin/dashboard/tenants/{t.id}")
    assert "revoked" in page.locator(".flash").inner_text()
    assert page.locator(f"#keys tr[data-key-id='{doomed['id']}'] .pill-bad").inner_text() == "revoked"
    assert page.locator(f"#keys tr[data-key-id='{doomed['id']}'] button").count() == 0
    page.screenshot(path=str(ARTIFACTS / "dashboard-revoked.png"), full_page=True)
    assert models_status(base, doomed["key"]) == 401
    assert models_status(base, t.key) == 200
    audit = admin.get("/admin/audit", params={"action": "key.revoke", "target": doomed["id"]}).json()["data"]
    assert [e["actor"] for e in audit] == ["admin"]

    [cookie] = [c for c in context.cookies() if c["name"] == COOKIE]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and not cookie["secure"]
    page.click("text=Sign out")
    page.wait_for_url(f"{base}/admin/login")
    page.goto(f"{base}/admin")
    assert page.url == f"{base}/admin/login"

    assert not console_errors, console_errors
    assert visited and not [u for u in visited if admin_token in u]


def test_wrong_token_shows_an_error_and_starts_no_session(
    gateway: Any, context: BrowserContext, visited: list[str]
) -> None:
    page = context.new_page()
    sign_in(page, gateway.url, "not-the-admin-token")
    assert "wrong" in page.locator("#login-error").inner_text()
    page.screenshot(path=str(ARTIFACTS / "dashboard-login-error.png"))
    assert not [c for c in context.cookies() if c["name"].startswith(COOKIE)]
    page.goto(f"{gateway.url}/admin")
    assert page.url == f"{gateway.url}/admin/login"
    assert not [u for u in visited if "not-the-admin-token" in u]


def test_pages_need_a_session_and_posts_need_its_csrf_token(
    gateway: Any, admin_token: str, make_tenant: Callable[[], TenantHandle], context: BrowserContext
) -> None:
    base = gateway.url
    t = make_tenant()
    with httpx.Client(base_url=base) as anonymous:
        r = anonymous.get("/admin")
        assert r.status_code == 303 and r.headers["location"] == "/admin/login"
        assert anonymous.get(f"/admin/dashboard/tenants/{t.id}").status_code == 303
        assert anonymous.post(f"/admin/dashboard/keys/{t.key_id}/revoke", data={"_csrf_token": "x"}).status_code == 403

    page = context.new_page()
    sign_in(page, base, admin_token)
    assert page.url == f"{base}/admin"
    cookies = {c["name"]: c["value"] for c in context.cookies()}
    with httpx.Client(base_url=base, cookies=cookies) as signed_in:
        assert signed_in.get(f"/admin/dashboard/tenants/{t.id}").status_code == 200
        revoke = f"/admin/dashboard/keys/{t.key_id}/revoke"
        assert signed_in.post(revoke, data={}).status_code == 403
        assert signed_in.post(revoke, data={"_csrf_token": "forged"}).status_code == 403
        assert signed_in.post("/admin/logout", data={}).status_code == 403
        # The cookie is no admin credential for the JSON API, which keeps its Bearer guard and needs no CSRF token.
        assert signed_in.get("/admin/tenants").status_code == 401
    assert models_status(base, t.key) == 200
    created = httpx.post(f"{base}/admin/tenants", json={"name": f"no-csrf-{t.id}"},
                         headers={"Authorization": f"Bearer {admin_token}"})  # fmt: skip
    assert created.status_code == 201
    assert httpx.get(f"{base}/admin/dashboard/tenants/tnt_nope", cookies=cookies).status_code == 404
