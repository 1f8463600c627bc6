"""The console's Billing page against localstripe: in Debian's chromium with localstripe's Stripe.js, a tenant adds
a card and tops up 20.00 (credited once, shown at once), a declining card shows Stripe's message and adds nothing;
over HTTP, a gateway without Stripe says so on the page, a postpaid tenant sees no top-up, and nothing of another
tenant's shows or can be touched."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, expect, sync_playwright

from tests.conftest import ARTIFACTS
from tests.support.browser import CHROMIUM_ARGS, chromium_path
from tests.support.console import Console, new_email
from tests.support.processes import GatewayProcess
from tests.support.signin import PASSWORD
from tests.support.sql import Sql
from tests.support.stripe import card, gateway_env_with_stripe, register_webhook, stripe_post

VISA, MASTERCARD, DECLINED = "4242424242424242", "5555555555554444", "4000000000000002"


class OffLoopSql:
    """tests.support.sql.Sql from another thread: Playwright's sync API keeps an event loop running in this one."""

    def __init__(self, sql: Sql) -> None:
        self._sql = sql

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any) -> Any:
            with ThreadPoolExecutor(1) as pool:
                return pool.submit(getattr(self._sql, name), *args).result()

        return call


@pytest.fixture
def db(sql: Sql) -> Any:
    return OffLoopSql(sql)


@pytest.fixture(scope="module")
def bill_gateway(gateway_env: dict[str, str], localstripe: Any) -> Iterator[GatewayProcess]:
    """The session's database and engine, with Stripe (localstripe) configured and delivering its webhooks."""
    ARTIFACTS.mkdir(exist_ok=True)
    env = gateway_env_with_stripe(gateway_env, localstripe.url)
    gw = GatewayProcess(env, ARTIFACTS / "gateway-console-billing.log")
    gw.start()
    register_webhook(localstripe, "console-billing", f"{gw.url}/webhooks/stripe")
    yield gw
    gw.stop()


def approved(base_url: str, admin_token: str, sql: Any) -> tuple[Console, str, str]:
    """A signed-up tenant an operator approved (prepaid, the default), signed in over HTTP."""
    console, email = Console(base_url), new_email()
    assert console.sign_up(email).status_code == 200
    tenant_id = sql.scalar("SELECT tenant_id FROM users WHERE email = $1", email)
    admin = httpx.post(f"{base_url}/admin/tenants/{tenant_id}/approve",
                       headers={"Authorization": f"Bearer {admin_token}"}, timeout=60)  # fmt: skip
    assert admin.status_code == 200, admin.text
    assert console.sign_in(email).status_code == 303
    return console, email, tenant_id


@pytest.fixture
def context(tmp_path: Path) -> Iterator[BrowserContext]:
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1280, "height": 1000},
        )  # fmt: skip
        try:
            yield ctx
        finally:
            ctx.close()


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"console-billing{name}.png"), full_page=True)


def billing_page(context: BrowserContext, base: str, email: str) -> Page:
    page = context.new_page()
    page.goto(f"{base}/console/login")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("link", name="Billing").click()
    expect(page.get_by_role("heading", name="Billing")).to_be_visible()
    return page


def type_card(page: Page, number: str) -> None:
    """Into localstripe's stand-in of Stripe's card Element (its own inputs, named by placeholder)."""
    element = page.get_by_role("group", name="card")
    for field, value in (("number", number), ("exp_month", "12"), ("exp_year", "30"), ("cvc", "123"),
                         ("postal_code", "42424")):  # fmt: skip
        element.locator(f"input[placeholder={field}]").fill(value)


def credit_entries(sql: Any, tenant_id: str) -> list[dict[str, Any]]:
    return sql.fetch("SELECT * FROM ledger_entries WHERE tenant_id = $1 AND kind = 'credit' ORDER BY id", tenant_id)


def test_a_tenant_adds_a_card_and_tops_up_in_the_browser(
    bill_gateway: GatewayProcess, admin_token: str, db: Any, localstripe: Any, context: BrowserContext
) -> None:
    base = bill_gateway.url
    _, email, tenant_id = approved(base, admin_token, db)
    page = billing_page(context, base, email)
    expect(page.locator("#credit")).to_have_text("$0.00")
    expect(page.locator("#billing-mode")).to_contain_text("prepaid")
    expect(page.locator("#trial")).to_contain_text("1,000,000")
    expect(page.get_by_text("No card on file.")).to_be_visible()
    # Stripe.js is allowed from its origin on this page (and only it); the card never reaches the gateway.
    csp = page.request.get(f"{base}/console/billing").headers["content-security-policy"]
    assert f"script-src 'self' {localstripe.url}" in csp and f"connect-src 'self' {localstripe.url}" in csp
    sent_to_us: list[str] = []
    page.on("request", lambda r: sent_to_us.append(r.post_data or "") if r.url.startswith(base) else None)

    type_card(page, VISA)
    shot(page, "-card")
    page.get_by_role("button", name="Add card").click()
    expect(page.locator("#card-summary")).to_contain_text("Visa •••• 4242")
    expect(page.get_by_role("status")).to_contain_text("saved")
    assert not any(VISA in body for body in sent_to_us)
    assert db.scalar("SELECT stripe_payment_method_id FROM billing_accounts WHERE tenant_id = $1", tenant_id)

    page.get_by_label("Amount").fill("20.00")
    expect(page.get_by_label("Pay with")).to_have_value("default")
    page.get_by_role("button", name="Top up").click()
    expect(page.locator("#billing-status")).to_contain_text("credited", timeout=30_000)
    expect(page.locator("#credit")).to_have_text("$20.00")
    shot(page, "")
    entries = credit_entries(db, tenant_id)
    assert len(entries) == 1 and entries[0]["amount_micros"] == 2000 * 1_000_000
    pi = entries[0]["idempotency_key"]
    assert pi.startswith("pi_") and db.scalar("SELECT credited FROM stripe_payments WHERE id = $1", pi)
    # A reload (and the webhook, whenever it comes) shows the same credit: credited once for that PaymentIntent.
    page.reload()
    expect(page.locator("#credit")).to_have_text("$20.00")
    assert [e["idempotency_key"] for e in credit_entries(db, tenant_id)] == [pi]

    # Auto-recharge is saved from its form and shown back.
    page.get_by_label("Recharge automatically with the card on file").check()
    page.get_by_label("When the credit falls below (USD)").fill("5.00")
    page.get_by_label("Recharge by (USD)").fill("10.00")
    page.get_by_role("button", name="Save auto-recharge").click()
    expect(page.get_by_role("status")).to_contain_text("Auto-recharge on")
    row = db.one("SELECT auto_recharge_enabled, auto_recharge_threshold, auto_recharge_amount FROM billing_accounts "
                  "WHERE tenant_id = $1", tenant_id)  # fmt: skip
    assert row == {"auto_recharge_enabled": True, "auto_recharge_threshold": 500, "auto_recharge_amount": 1000}

    # Removing the card turns auto-recharge off and says why.
    page.get_by_role("button", name="Remove card").click()
    expect(page.get_by_text("No card on file.")).to_be_visible()
    expect(page.locator("#auto-off")).to_contain_text("card on file was removed")
    shot(page, "-removed")


def test_a_declined_card_shows_stripes_message_and_adds_no_credit(
    bill_gateway: GatewayProcess, admin_token: str, db: Any, context: BrowserContext
) -> None:
    base = bill_gateway.url
    _, email, tenant_id = approved(base, admin_token, db)
    page = billing_page(context, base, email)
    # Top up with a new card, the declining one: Stripe refuses it when it is set up.
    type_card(page, DECLINED)
    page.get_by_label("Amount").fill("20.00")
    expect(page.get_by_label("Pay with")).to_have_value("new")
    page.get_by_role("button", name="Top up").click()
    expect(page.locator("#billing-error")).to_have_text("Your card was declined.", timeout=30_000)
    expect(page.locator("#credit")).to_have_text("$0.00")
    shot(page, "-declined")
    # Nor as the card on file.
    page.get_by_role("button", name="Add card").click()
    expect(page.locator("#billing-error")).to_have_text("Your card was declined.")
    page.reload()
    expect(page.locator("#credit")).to_have_text("$0.00")
    expect(page.get_by_text("No card on file.")).to_be_visible()
    assert credit_entries(db, tenant_id) == []
    assert db.scalar("SELECT count(*) FROM stripe_payments WHERE tenant_id = $1", tenant_id) == 0
    assert db.scalar("SELECT stripe_payment_method_id FROM billing_accounts WHERE tenant_id = $1", tenant_id) is None


def test_without_stripe_the_page_says_so(gateway: Any, admin_token: str, sql: Sql) -> None:
    """The session's gateway has no STRIPE_API_KEY: the page still shows the credit, says payments are off."""
    console, _, _ = approved(gateway.url, admin_token, sql)
    with console:
        r = console.http.get("/console/billing")
        assert r.status_code == 200, r.text[:500]
        assert "Payments are not configured on this gateway" in r.text and "Prepaid credit" in r.text
        assert "js.stripe.com" not in r.text and "Add card" not in r.text
        assert "connect-src" not in r.headers["content-security-policy"]  # the console's usual policy
        token = console.csrf("/console/billing")
        r = console.http.post("/console/billing/setup-intent", headers={"X-CSRFToken": token})
        assert r.status_code == 404 and r.json()["error"]["code"] == "stripe_not_configured", r.text
        r = console.http.post("/console/billing/topups", json={"amount": "20.00"}, headers={"X-CSRFToken": token})
        assert r.status_code == 404 and r.json()["error"]["code"] == "stripe_not_configured", r.text


def _with_card(console: Console, localstripe: Any, number: str) -> tuple[str, str]:
    """Through the page's own routes: a SetupIntent confirmed as Stripe.js would, saved, then a 20.00 top-up."""
    token = console.csrf("/console/billing")
    headers = {"X-CSRFToken": token}
    si = console.http.post("/console/billing/setup-intent", headers=headers).json()
    pm = card(localstripe, number)
    form = {"payment_method": pm, "client_secret": si["client_secret"]}
    assert stripe_post(localstripe, f"/v1/setup_intents/{si['id']}/confirm", form).status_code == 200
    saved = console.http.post("/console/billing/card", json={"setup_intent": si["id"]}, headers=headers)
    assert saved.status_code == 201, saved.text
    topup = console.http.post("/console/billing/topups", json={"amount": "20.00"}, headers=headers)
    assert topup.status_code == 201 and topup.json()["credited"], topup.text
    return pm, str(topup.json()["id"])


def test_nothing_of_another_tenant_shows_or_can_be_touched(
    bill_gateway: GatewayProcess, admin_token: str, sql: Sql, localstripe: Any
) -> None:
    base = bill_gateway.url
    alice, _, alice_id = approved(base, admin_token, sql)
    bob, _, bob_id = approved(base, admin_token, sql)
    with alice, bob:
        alice_pm, alice_pi = _with_card(alice, localstripe, MASTERCARD)
        mine = alice.http.get("/console/billing").text
        assert '•••• <span id="card-last4">4444</span>' in mine and "$20.00" in mine
        notice = f"Alice's invoice failed {secrets.token_hex(3)}"
        sql.fetch("INSERT INTO billing_notices (tenant_id, kind, message, ref, created_at) VALUES ($1, "
                  "'invoice_payment_failed', $2, 'in_alice', now())", alice_id, notice)  # fmt: skip
        assert "Alice&#39;s invoice failed" in alice.http.get("/console/billing").text

        page = bob.http.get("/console/billing").text
        assert "4444" not in page and alice_pm not in page and alice_pi not in page and "Alice" not in page
        assert "No card on file." in page and "$0.00" in page
        headers = {"X-CSRFToken": bob.csrf("/console/billing")}
        # Bob can neither read back (and so credit himself) Alice's top-up nor pay with or remove her card.
        r = bob.http.post(f"/console/billing/topups/{alice_pi}/refresh", headers=headers)
        assert r.status_code == 404 and r.json()["error"]["param"] == "id", r.text
        r = bob.http.post("/console/billing/topups", json={"amount": "20.00", "payment_method": alice_pm},
                          headers=headers)  # fmt: skip
        assert r.status_code in (400, 404) and r.json()["error"]["param"] == "payment_method", r.text
        r = bob.post_form("/console/billing/card/remove", {"payment_method": alice_pm}, page="/console/billing")
        assert r.status_code in (400, 404), r.status_code
        assert sql.scalar("SELECT stripe_payment_method_id FROM billing_accounts WHERE tenant_id = $1",
                          alice_id) == alice_pm  # fmt: skip
        assert [e["idempotency_key"] for e in credit_entries(sql, alice_id)] == [alice_pi]
        assert credit_entries(sql, bob_id) == []
        # Without the CSRF token the page's routes refuse.
        assert bob.http.post("/console/billing/setup-intent").status_code == 403

        # A postpaid tenant: no top-up or auto-recharge, its invoices and its card instead.
        sql.fetch("UPDATE billing_accounts SET mode = 'postpaid' WHERE tenant_id = $1", bob_id)
        page = bob.http.get("/console/billing").text
        assert "Top up" not in page and "Save auto-recharge" not in page
        assert "postpaid" in page and "Invoices" in page and "Card on file" in page
        r = bob.http.post("/console/billing/topups", json={"amount": "20.00"}, headers=headers)
        assert r.status_code == 400 and "postpaid" in r.json()["error"]["message"], r.text
