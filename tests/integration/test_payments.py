"""Tenants pay by themselves, against localstripe: a card on file, top-ups credited once, auto-recharge, refunds
and disputes, postpaid collection and dunning. The gateway under test has Stripe configured and localstripe
delivers its webhooks to it; the events localstripe does not send (refunds, disputes) are signed here."""

from __future__ import annotations

import asyncio
import concurrent.futures
import secrets
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from billing import invoices, ledger, prices, stripe_sync
from billing.ledger import AccountDefaults
from billing.settings import BillingSettings
from billing.sql import Alchemy
from gateway.settings import to_asyncpg_url
from tests.conftest import ARTIFACTS
from tests.support.processes import GatewayProcess
from tests.support.sql import Sql
from tests.support.stripe import (
    API_KEY,
    card,
    deliver,
    event,
    gateway_env_with_stripe,
    register_webhook,
    stripe_get,
    stripe_post,
)

VISA, DECLINED_ON_ATTACH, DECLINED_ON_CHARGE, NEEDS_3DS = (
    "4242424242424242", "4000000000000002", "4000000000000341", "4000002500003155",
)  # fmt: skip
EPOCH = datetime(2001, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def pay_gateway(gateway_env: dict[str, str], localstripe: Any) -> Iterator[GatewayProcess]:
    ARTIFACTS.mkdir(exist_ok=True)
    env = {
        **gateway_env_with_stripe(gateway_env, localstripe.url),
        "BILLING_GRACE_DAYS": "1",
        "BILLING_DUNNING_SCHEDULE": "0 3 1 1 *",  # registered, but it does not fire during the test
    }
    gw = GatewayProcess(env, ARTIFACTS / "gateway-payments.log")
    gw.start()
    register_webhook(localstripe, "payments", f"{gw.url}/webhooks/stripe")
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def pay_admin(pay_gateway: GatewayProcess, admin_token: str) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {admin_token}"}
    with httpx.Client(base_url=pay_gateway.url, headers=headers, timeout=60) as client:
        yield client


Tenant = dict[str, Any]


@pytest.fixture(scope="module")
def new_tenant(pay_admin: httpx.Client, pay_gateway: GatewayProcess) -> Callable[..., Tenant]:
    def make(mode: str = "prepaid") -> Tenant:
        body = {"name": f"pay-{secrets.token_hex(4)}", "billing_mode": mode, "trial_tokens": 0}
        t = pay_admin.post("/admin/tenants", json=body)
        assert t.status_code == 201, t.text
        key = pay_admin.post(f"/admin/tenants/{t.json()['id']}/keys", json={"name": "k"}).json()["key"]
        client = httpx.Client(base_url=pay_gateway.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        return {"id": t.json()["id"], "api": client}

    return make


def add_card(localstripe: Any, t: Tenant, number: str = VISA) -> str:
    """What the Billing page does: a SetupIntent from us, confirmed by Stripe.js with the card, then saved."""
    si = t["api"].post("/v1/billing/setup-intents")
    assert si.status_code == 201, si.text
    assert si.json()["client_secret"].startswith(si.json()["id"])
    form = {"payment_method": card(localstripe, number), "client_secret": si.json()["client_secret"]}
    confirmed = stripe_post(localstripe, f"/v1/setup_intents/{si.json()['id']}/confirm", form)
    assert confirmed.status_code == 200, confirmed.text
    saved = t["api"].post("/v1/billing/payment-methods", json={"setup_intent": si.json()["id"]})
    assert saved.status_code == 201, saved.text
    return str(form["payment_method"])


def credit_entries(sql: Sql, tenant_id: str) -> list[dict[str, Any]]:
    return sql.fetch("SELECT * FROM ledger_entries WHERE tenant_id = $1 AND kind = 'credit' ORDER BY id", tenant_id)


def credit_balance(t: Tenant) -> int:
    r = t["api"].get("/v1/balance")
    assert r.status_code == 200, r.text
    return int(r.json()["credit_balance"])


def wait_for(check: Callable[[], Any], timeout_s: float = 30, what: str = "") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what or check}")


# --- card on file, top-ups ----------------------------------------------------------------------------------------


def test_card_on_file_then_top_up_is_credited_once_by_read_back_and_webhook(
    pay_gateway: GatewayProcess, new_tenant: Callable[..., Tenant], localstripe: Any, sql: Sql
) -> None:
    t = new_tenant()
    config = t["api"].get("/v1/billing/config").json()
    assert config["publishable_key"] == "pk_test_lgw" and config["stripe_js_url"].endswith("/js.stripe.com/v3/")
    assert config["topup"] == {"min": 500, "max": 1_000_000} and config["currency"] == "usd"
    assert httpx.get(config["stripe_js_url"], timeout=5).status_code == 200  # the page can load Stripe.js from it

    pm = add_card(localstripe, t)
    cards = t["api"].get("/v1/billing/payment-methods").json()["data"]
    assert [(c["id"], c["brand"], c["last4"], c["default"]) for c in cards] == [(pm, "visa", "4242", True)]
    customer = sql.scalar("SELECT stripe_customer_id FROM billing_accounts WHERE tenant_id = $1", t["id"])
    assert stripe_get(localstripe, f"/v1/customers/{customer}")["invoice_settings"]["default_payment_method"] == pm

    r = t["api"].post("/v1/billing/topups", json={"amount": 2000, "payment_method": "default"})
    assert r.status_code == 201, r.text
    topup = r.json()
    assert topup["status"] == "succeeded" and topup["credited"] and topup["client_secret"].startswith(topup["id"])
    assert credit_balance(t) == 2000
    # localstripe's payment_intent.succeeded arrives a second later: it finds the credit made
    wait_for(lambda: sql.fetch("SELECT 1 FROM stripe_events WHERE type = 'payment_intent.succeeded' AND "
                               "handled = 'already_credited'"), what="the webhook")  # fmt: skip
    assert t["api"].post(f"/v1/billing/topups/{topup['id']}/refresh").json()["credited"] is True
    assert t["api"].get(f"/v1/billing/topups/{topup['id']}").json()["status"] == "succeeded"
    [entry] = credit_entries(sql, t["id"])
    assert entry["idempotency_key"] == topup["id"] and entry["amount_micros"] == 2000 * 1_000_000
    assert credit_balance(t) == 2000

    # webhook first, read-back second (a PaymentIntent confirmed by the browser): still one credit
    pi = stripe_post(localstripe, "/v1/payment_intents", {
        "amount": "700", "currency": "usd", "customer": customer, "payment_method": pm, "confirm": "true",
        "metadata[lgw_tenant_id]": t["id"], "metadata[lgw_purpose]": "topup"}).json()  # fmt: skip
    assert pi["status"] == "succeeded"
    first = deliver(pay_gateway.url, event("payment_intent.succeeded", pi))
    assert first.status_code == 200 and first.json()["handled"] == "credited", first.text
    assert t["api"].post(f"/v1/billing/topups/{pi['id']}/refresh").json()["credited"] is True
    assert [e["idempotency_key"] for e in credit_entries(sql, t["id"])] == [topup["id"], pi["id"]]
    assert credit_balance(t) == 2700

    # replace the card, then remove it: the account has no card on file
    second = add_card(localstripe, t)
    assert {c["id"]: c["default"] for c in t["api"].get("/v1/billing/payment-methods").json()["data"]} == {
        pm: False, second: True}  # fmt: skip
    assert t["api"].delete(f"/v1/billing/payment-methods/{second}").json()["deleted"] is True
    assert sql.scalar("SELECT stripe_payment_method_id FROM billing_accounts WHERE tenant_id = $1", t["id"]) is None
    gone = t["api"].delete(f"/v1/billing/payment-methods/{second}")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"
    audit = "SELECT action FROM audit_log WHERE target = $1 AND action LIKE 'billing.%' ORDER BY id"
    actions = sql.fetch(audit, t["id"])
    assert [a["action"] for a in actions] == ["billing.card_saved", "billing.topup", "billing.card_saved",
                                             "billing.card_removed"]  # fmt: skip


def test_declined_cards_show_stripes_message_and_add_nothing(
    new_tenant: Callable[..., Tenant], localstripe: Any, sql: Sql
) -> None:
    t = new_tenant()
    si = t["api"].post("/v1/billing/setup-intents").json()
    form = {"payment_method": card(localstripe, DECLINED_ON_ATTACH), "client_secret": si["client_secret"]}
    refused = stripe_post(localstripe, f"/v1/setup_intents/{si['id']}/confirm", form)  # what Stripe.js shows
    assert refused.status_code == 402 and refused.json()["error"]["message"] == "Your card was declined."
    saved = t["api"].post("/v1/billing/payment-methods", json={"setup_intent": si["id"]})
    assert saved.status_code == 402 and saved.json()["error"]["code"] == "setup_intent_unconfirmed", saved.text

    for number in (DECLINED_ON_ATTACH, DECLINED_ON_CHARGE):  # a new card given with the top-up
        r = t["api"].post("/v1/billing/topups", json={"amount": 2000, "payment_method": card(localstripe, number)})
        assert r.status_code == 402, r.text
        assert r.json()["error"] == {"message": "Your card was declined.", "type": "card_error",
                                     "code": "card_declined", "param": None}  # fmt: skip
    assert credit_entries(sql, t["id"]) == [] and credit_balance(t) == 0


def test_top_up_bounds_postpaid_and_no_card(new_tenant: Callable[..., Tenant]) -> None:
    t = new_tenant()
    for amount in (499, 1_000_001, 0, -5):
        r = t["api"].post("/v1/billing/topups", json={"amount": amount})
        assert r.status_code == 400 and r.json()["error"]["param"] == "amount", r.text
        assert "between 500 and 1000000" in r.json()["error"]["message"]
    r = t["api"].post("/v1/billing/topups", json={"amount": "ten"})
    assert r.status_code == 400 and "amount" in r.json()["error"]["message"], r.text
    r = t["api"].post("/v1/billing/topups", json={"amount": 1000, "payment_method": "default"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "payment_method" and "no card" in r.text
    # without a card the PaymentIntent waits for Stripe.js to confirm it with one
    r = t["api"].post("/v1/billing/topups", json={"amount": 1000})
    assert r.status_code == 201 and r.json()["status"] == "requires_payment_method" and not r.json()["credited"]
    r = t["api"].put("/v1/billing/auto-recharge", json={"enabled": True, "threshold": 100, "amount": 1000})
    assert r.status_code == 400 and "card" in r.json()["error"]["message"]

    postpaid = new_tenant("postpaid")
    r = postpaid["api"].post("/v1/billing/topups", json={"amount": 1000})
    assert r.status_code == 400 and r.json()["error"]["param"] == "amount", r.text
    assert "postpaid" in r.json()["error"]["message"] and "invoiced" in r.json()["error"]["message"]


def test_stripe_not_configured_is_a_clear_404(make_tenant: Callable[..., Any], gateway: GatewayProcess) -> None:
    """Not a 5xx: SDKs retry those by themselves, and a gateway without Stripe will not have it a second later."""
    t = make_tenant()
    r = httpx.get(gateway.url + "/v1/billing/config", headers=t.headers, timeout=30)
    assert r.status_code == 200 and r.json()["enabled"] is False and r.json()["publishable_key"] is None, r.text
    calls = [("POST", "/v1/billing/setup-intents", None),
             ("GET", "/v1/billing/payment-methods", None), ("POST", "/v1/billing/payment-methods", {}),
             ("DELETE", "/v1/billing/payment-methods/pm_x", None), ("POST", "/v1/billing/topups", {"amount": 1000}),
             ("GET", "/v1/billing/topups/pi_x", None), ("POST", "/v1/billing/topups/pi_x/refresh", None),
             ("PUT", "/v1/billing/auto-recharge", {"enabled": False})]  # fmt: skip
    for method, path, body in calls:
        r = httpx.request(method, gateway.url + path, headers=t.headers, json=body, timeout=30)
        assert r.status_code == 404, (path, r.text)
        assert r.json()["error"]["code"] == "stripe_not_configured" and "STRIPE_API_KEY" in r.json()["error"]["message"]
    assert httpx.get(gateway.url + "/v1/billing/notices", headers=t.headers).json()["data"] == []


# --- webhooks: refunds, disputes, order and repetition ------------------------------------------------------------


def test_webhooks_twice_and_out_of_order_change_nothing_the_second_time(
    pay_gateway: GatewayProcess, pay_admin: httpx.Client, new_tenant: Callable[..., Tenant], localstripe: Any, sql: Sql
) -> None:
    t = new_tenant()
    add_card(localstripe, t)
    topup = t["api"].post("/v1/billing/topups", json={"amount": 1500, "payment_method": "default"}).json()
    assert topup["credited"] and credit_balance(t) == 1500
    pi = stripe_get(localstripe, f"/v1/payment_intents/{topup['id']}")
    charge = {"id": "ch_" + secrets.token_hex(6), "object": "charge", "payment_intent": pi["id"], "currency": "usd"}

    refund_500 = event("charge.refunded", {**charge, "amount_refunded": 500})
    refund_2000 = event("charge.refunded", {**charge, "amount_refunded": 1800})  # refunded again, later
    failed_late = event("payment_intent.payment_failed", {**pi, "status": "requires_payment_method"})
    replies = [deliver(pay_gateway.url, e).json()["handled"]
               for e in (refund_500, refund_500, refund_2000, refund_500 | {"id": "evt_" + secrets.token_hex(8)},
                         failed_late, refund_2000)]  # fmt: skip
    assert replies == ["refunded", "duplicate", "refunded", "refund_already_taken", "already_credited", "duplicate"]
    refunds = sql.fetch("SELECT * FROM ledger_entries WHERE tenant_id = $1 AND kind = 'refund' ORDER BY id", t["id"])
    assert [r["amount_micros"] for r in refunds] == [-500 * 1_000_000, -1300 * 1_000_000]
    assert credit_balance(t) == -300  # refunded more than is left: the balance goes negative
    assert sql.scalar("SELECT status FROM stripe_payments WHERE id = $1", pi["id"]) == "succeeded"

    dispute = {"id": "dp_" + secrets.token_hex(6), "object": "dispute", "charge": charge["id"],
               "payment_intent": pi["id"], "amount": 1500, "currency": "usd", "reason": "fraudulent",
               "status": "needs_response"}  # fmt: skip
    opened = event("charge.dispute.created", dispute)
    assert [deliver(pay_gateway.url, opened).json()["handled"] for _ in range(2)] == ["dispute_recorded", "duplicate"]
    listed = [d for d in pay_admin.get("/admin/billing/disputes").json()["data"] if d["id"] == dispute["id"]]
    assert len(listed) == 1 and listed[0]["tenant_id"] == t["id"] and listed[0]["reason"] == "fraudulent"

    # paid in another currency than the account's: recorded, not credited
    eur = {"id": "pi_" + secrets.token_hex(8), "object": "payment_intent", "amount": 900, "amount_received": 900,
           "currency": "eur", "status": "succeeded", "metadata": {"lgw_tenant_id": t["id"]}}  # fmt: skip
    assert deliver(pay_gateway.url, event("payment_intent.succeeded", eur)).json()["handled"] == "currency_mismatch"
    row = sql.one("SELECT * FROM stripe_payments WHERE id = $1", eur["id"])
    assert not row["credited"] and "eur" in row["error"] and credit_balance(t) == -300
    # the reconciliation does not count it as missing credit (it says why in the payment), and finds the rest whole
    report = pay_admin.get("/admin/billing/reconcile", params={"stripe": "false"}).json()["data"]
    mine = next(r for r in report if r["tenant_id"] == t["id"])
    assert mine["uncredited_payments"] == 0 and mine["unmatched_credits"] == 0 and mine["problems"] == []


def test_reconciliation_finds_a_payment_without_its_credit(
    pay_gateway: GatewayProcess, pay_admin: httpx.Client, new_tenant: Callable[..., Tenant], localstripe: Any, sql: Sql
) -> None:
    t = new_tenant()
    add_card(localstripe, t)
    topup = t["api"].post("/v1/billing/topups", json={"amount": 600, "payment_method": "default"}).json()
    webhook = ("SELECT 1 FROM stripe_events e WHERE e.type = 'payment_intent.succeeded' AND "
               "e.handled = 'already_credited' AND e.received_at > now() - interval '1 minute'")  # fmt: skip
    wait_for(lambda: sql.fetch(webhook), what="the webhook")
    report = {r["tenant_id"]: r for r in pay_admin.get("/admin/billing/reconcile").json()["data"]}
    assert report[t["id"]]["problems"] == []
    sql.fetch("UPDATE stripe_payments SET credited = false WHERE id = $1", topup["id"])  # as if never credited
    sql.fetch("UPDATE ledger_entries SET idempotency_key = 'lost' WHERE idempotency_key = $1", topup["id"])
    report = {r["tenant_id"]: r for r in pay_admin.get("/admin/billing/reconcile").json()["data"]}
    problems = " ".join(report[t["id"]]["problems"])
    assert report[t["id"]]["uncredited_payments"] == 1, report[t["id"]]
    assert f"payment {topup['id']} succeeded on Stripe but is not credited" in problems, report[t["id"]]


# --- auto-recharge ------------------------------------------------------------------------------------------------


def _charge_concurrently(database_url: str, tenant_id: str, model: str, n: int, prompt_tokens: int) -> None:
    """n usage rows settled at once, each in its own transaction: what n gateway writers do."""

    async def run() -> None:
        pool = await asyncpg.create_pool(database_url, min_size=n, max_size=n)
        defaults = AccountDefaults("prepaid", 0, "usd")

        async def one() -> None:
            row = {"request_id": "req_" + secrets.token_hex(10), "tenant_id": tenant_id, "adapter_id": None,
                   "base_model": model, "prompt_tokens": prompt_tokens, "completion_tokens": 0,
                   "started_at": datetime.now(UTC)}  # fmt: skip
            async with pool.acquire() as conn, conn.transaction():
                await ledger.charge_usage(conn, [row], defaults)

        try:
            await asyncio.gather(*(one() for _ in range(n)))
        finally:
            await pool.close()

    asyncio.run(run())


def _price(database_url: str, model: str, per_million: int) -> None:
    async def run() -> None:
        db = create_async_engine(to_asyncpg_url(database_url))
        try:
            async with db.begin() as conn:
                await prices.set_price(conn, model, per_million, 0, "usd", datetime.now(UTC) - timedelta(hours=1))
        finally:
            await db.dispose()

    asyncio.run(run())


def test_auto_recharge_under_32_concurrent_charges_charges_once(
    database_url: str, new_tenant: Callable[..., Tenant], localstripe: Any, sql: Sql
) -> None:
    t = new_tenant()
    add_card(localstripe, t)
    assert t["api"].post("/v1/billing/topups", json={"amount": 10_000, "payment_method": "default"}).json()["credited"]
    r = t["api"].put("/v1/billing/auto-recharge", json={"enabled": True, "threshold": 9_990, "amount": 5_000})
    assert r.status_code == 200 and r.json()["enabled"] and r.json()["disabled_reason"] is None, r.text
    model = "ar-" + secrets.token_hex(4)
    _price(database_url, model, 1_000_000)  # one cent per token: each charge below costs 10 cents

    _charge_concurrently(database_url, t["id"], model, 32, 10)  # 10,000 → 9,680: all 32 below the threshold

    account = sql.one("SELECT * FROM billing_accounts WHERE tenant_id = $1", t["id"])
    assert account["auto_recharge_count"] == 1  # one crossing armed, however many charges saw the low balance
    wait_for(lambda: sql.fetch("SELECT 1 FROM stripe_payments WHERE tenant_id = $1 AND purpose = 'auto_recharge' "
                               "AND credited", t["id"]), what="the recharge")  # fmt: skip
    time.sleep(2)  # its webhook, and anything else that might (wrongly) charge again
    recharges = sql.fetch("SELECT * FROM stripe_payments WHERE tenant_id = $1 AND purpose = 'auto_recharge'", t["id"])
    assert len(recharges) == 1 and recharges[0]["amount_received"] == 5_000
    mine = {"lgw_tenant_id": t["id"], "lgw_purpose": "auto_recharge"}
    on_stripe = [p for p in stripe_get(localstripe, "/v1/payment_intents", limit=100)["data"]
                 if mine.items() <= p["metadata"].items()]  # fmt: skip
    assert [p["id"] for p in on_stripe] == [recharges[0]["id"]]
    assert [e["idempotency_key"] for e in credit_entries(sql, t["id"])][1:] == [recharges[0]["id"]]
    assert credit_balance(t) == 10_000 - 320 + 5_000
    state = t["api"].get("/v1/billing/auto-recharge").json()
    assert state["enabled"] and not state["in_flight"]
    assert sql.scalar("SELECT count(*) FROM audit_log WHERE target = $1 AND action = 'billing.auto_recharge_charged'",
                      t["id"]) == 1  # fmt: skip


def test_auto_recharge_through_the_gateway_32_concurrent_requests_recharge_once(
    pay_gateway: GatewayProcess,
    pay_admin: httpx.Client,
    new_tenant: Callable[..., Tenant],
    localstripe: Any,
    models_dir: Path,
    sql: Sql,
) -> None:
    """The same through the real proxy: the usage writer settles the 32 requests (in whatever batches it
    commits), the crossing is noticed in its transaction, the worker of the same process charges once."""
    t = new_tenant()
    dep = pay_admin.post(f"/admin/tenants/{t['id']}/adapters",
                         json={"name": "ar", "path": str(models_dir / "adapters" / "lora-1")})  # fmt: skip
    assert dep.status_code == 201, dep.text
    price = {"model": dep.json()["id"], "prompt_per_million": 1_000_000, "completion_per_million": 1_000_000}
    assert pay_admin.post("/admin/prices", json=price).status_code == 201
    add_card(localstripe, t)
    assert t["api"].post("/v1/billing/topups", json={"amount": 10_000, "payment_method": "default"}).json()["credited"]
    assert t["api"].put("/v1/billing/auto-recharge", json={"enabled": True, "threshold": 9_990,
                                                            "amount": 5_000}).status_code == 200  # fmt: skip

    body = {"model": "ar", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "temperature": 0}
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        replies = list(pool.map(lambda _: t["api"].post("/v1/chat/completions", json=body), range(32)))
    assert [r.status_code for r in replies] == [200] * 32, [r.text for r in replies if r.status_code != 200][:2]
    cost = sum(r.json()["usage"]["total_tokens"] for r in replies)  # one cent per token

    recharged = "SELECT 1 FROM stripe_payments WHERE tenant_id = $1 AND purpose = 'auto_recharge' AND credited"
    wait_for(lambda: sql.fetch(recharged, t["id"]), what="the recharge")
    wait_for(lambda: sql.scalar("SELECT count(*) FROM ledger_entries WHERE tenant_id = $1 AND kind = 'charge'",
                                t["id"]) == 32, what="the 32 charges")  # fmt: skip
    time.sleep(2)
    assert sql.scalar("SELECT auto_recharge_count FROM billing_accounts WHERE tenant_id = $1", t["id"]) == 1
    assert sql.scalar("SELECT count(*) FROM stripe_payments WHERE tenant_id = $1 AND purpose = 'auto_recharge'",
                      t["id"]) == 1  # fmt: skip
    assert credit_balance(t) == 10_000 - cost + 5_000


@pytest.mark.parametrize(("number", "reason"), [(DECLINED_ON_CHARGE, "declined"), (NEEDS_3DS, "authentication")])
def test_auto_recharge_declined_or_needing_authentication_turns_itself_off(
    number: str,
    reason: str,
    database_url: str,
    pay_admin: httpx.Client,
    new_tenant: Callable[..., Tenant],
    localstripe: Any,
    sql: Sql,
) -> None:
    t = new_tenant()
    pm = card(localstripe, number)
    assert t["api"].post("/v1/billing/payment-methods", json={"payment_method": pm}).status_code == 201
    assert pay_admin.post(f"/admin/tenants/{t['id']}/credits", json={"amount": 1_000}).status_code == 201
    r = t["api"].put("/v1/billing/auto-recharge", json={"enabled": True, "threshold": 995, "amount": 2_000})
    assert r.status_code == 200, r.text
    model = "ar-" + secrets.token_hex(4)
    _price(database_url, model, 1_000_000)
    _charge_concurrently(database_url, t["id"], model, 4, 10)

    state = wait_for(lambda: (s := t["api"].get("/v1/billing/auto-recharge").json())["disabled_reason"] and s,
                     what="auto-recharge to turn off")  # fmt: skip
    assert not state["enabled"] and not state["in_flight"] and reason in state["disabled_reason"]
    assert credit_balance(t) == 1_000 - 40 and len(credit_entries(sql, t["id"])) == 1
    notices = t["api"].get("/v1/billing/notices").json()["data"]
    assert notices[0]["kind"] == "auto_recharge_off" and reason in notices[0]["message"]
    assert sql.scalar("SELECT count(*) FROM audit_log WHERE target = $1 AND action = 'billing.auto_recharge_off'",
                      t["id"]) == 1  # fmt: skip


# --- postpaid collection and dunning ------------------------------------------------------------------------------


def _postpaid_invoice(
    database_url: str, tenant_id: str, period: str, due_at: datetime | None, *, sync: bool = False
) -> dict[str, Any]:
    """A closed invoice for the tenant; with `sync`, due in the outbox at EPOCH (a pass at EPOCH takes it and no
    other file's rows)."""

    async def run() -> dict[str, Any]:
        db = create_async_engine(to_asyncpg_url(database_url))
        model = "pp-" + secrets.token_hex(4)
        start = datetime.strptime(period, "%Y-%m").replace(tzinfo=UTC)
        try:
            async with db.begin() as conn:
                await prices.set_price(conn, model, 1_000_000, 0, "usd", start - timedelta(days=1))
                row = {"request_id": "req_" + secrets.token_hex(10), "tenant_id": tenant_id, "adapter_id": None,
                       "base_model": model, "prompt_tokens": 1234, "completion_tokens": 0,
                       "started_at": start}  # fmt: skip
                await ledger.charge_usage(Alchemy(conn), [row], AccountDefaults("postpaid", 0, "usd"))
                [inv] = [i for i in await invoices.close_period(conn, period) if i["tenant_id"] == tenant_id]
                due_in_outbox = EPOCH if sync else datetime(2999, 1, 1, tzinfo=UTC)
                await conn.execute(
                    sa.text("UPDATE stripe_outbox SET next_attempt_at = :t WHERE invoice_id = :i"),
                    {"t": due_in_outbox, "i": inv["id"]},
                )
                if due_at is not None:
                    await conn.execute(sa.text("UPDATE invoices SET due_at = :d WHERE id = :i"),
                                       {"d": due_at, "i": inv["id"]})  # fmt: skip
            return inv
        finally:
            await db.dispose()

    return asyncio.run(run())


def _sync(database_url: str, settings: BillingSettings) -> stripe_sync.SyncReport:
    async def run() -> stripe_sync.SyncReport:
        db = create_async_engine(to_asyncpg_url(database_url))
        try:
            return await stripe_sync.sync_once(db, settings, now=EPOCH)
        finally:
            await db.dispose()

    return asyncio.run(run())


@pytest.fixture(scope="module")
def sync_settings(localstripe: Any) -> BillingSettings:
    from pydantic import SecretStr

    return BillingSettings(stripe_api_key=SecretStr(API_KEY), stripe_api_base=localstripe.url,
                           stripe_network_retries=0, stripe_auto_advance=False, days_until_due=7)  # fmt: skip


def test_postpaid_invoice_is_charged_to_the_card_or_sent(
    database_url: str, new_tenant: Callable[..., Tenant], localstripe: Any, sql: Sql, sync_settings: BillingSettings
) -> None:
    with_card, declining, without = new_tenant("postpaid"), new_tenant("postpaid"), new_tenant("postpaid")
    add_card(localstripe, with_card)
    pm = card(localstripe, DECLINED_ON_CHARGE)
    assert declining["api"].post("/v1/billing/payment-methods", json={"payment_method": pm}).status_code == 201
    made = {t["id"]: _postpaid_invoice(database_url, t["id"], "2023-03", None, sync=True)
            for t in (with_card, declining, without)}  # fmt: skip
    synced = _sync(database_url, sync_settings).synced
    assert set(made[t]["id"] for t in made) <= set(synced)

    paid = sql.one("SELECT * FROM invoices WHERE id = $1", made[with_card["id"]]["id"])
    assert paid["collection_method"] == "charge_automatically" and paid["payment_error"] is None
    assert stripe_get(localstripe, f"/v1/invoices/{paid['stripe_invoice_id']}")["status"] == "paid"
    # localstripe's invoice.payment_succeeded marks ours paid
    wait_for(lambda: sql.scalar("SELECT status FROM invoices WHERE id = $1", paid["id"]) == "paid", what="paid")

    failed = sql.one("SELECT * FROM invoices WHERE id = $1", made[declining["id"]]["id"])
    assert failed["collection_method"] == "charge_automatically" and "declined" in failed["payment_error"]
    notices = declining["api"].get("/v1/billing/notices").json()["data"]
    assert notices and notices[0]["kind"] == "invoice_payment_failed" and failed["id"] in notices[0]["message"]
    assert failed["status"] == "open"

    sent = sql.one("SELECT * FROM invoices WHERE id = $1", made[without["id"]]["id"])
    assert sent["collection_method"] == "send_invoice"
    assert abs((sent["due_at"] - datetime.now(UTC)) - timedelta(days=7)) < timedelta(minutes=5)


def test_dunning_suspends_when_overdue_and_paying_resumes(
    pay_gateway: GatewayProcess, pay_admin: httpx.Client, database_url: str, new_tenant: Callable[..., Tenant],
    sql: Sql,
) -> None:  # fmt: skip
    late, recent, waived = new_tenant("postpaid"), new_tenant("postpaid"), new_tenant("postpaid")
    now = datetime.now(UTC)
    inv = _postpaid_invoice(database_url, late["id"], "2023-04", now - timedelta(days=1, hours=1))
    _postpaid_invoice(database_url, recent["id"], "2023-04", now - timedelta(hours=20))  # within the grace day
    waived_inv = _postpaid_invoice(database_url, waived["id"], "2023-04", now - timedelta(days=3))

    suspended = pay_admin.post("/admin/billing/dunning/run").json()["suspended"]
    assert late["id"] in suspended and waived["id"] in suspended and recent["id"] not in suspended
    r = late["api"].get("/v1/models")
    assert r.status_code == 403 and r.json()["error"]["code"] == "account_suspended", r.text
    assert "invoice is overdue" in r.json()["error"]["message"] and "Billing page" in r.json()["error"]["message"]
    assert late["api"].get("/v1/invoices").status_code == 200  # it can still see what it owes, and pay
    assert recent["api"].get("/v1/models").status_code == 200
    assert pay_admin.post("/admin/billing/dunning/run").json()["suspended"] == []  # checked again: nothing new

    paid = event("invoice.paid", {"id": "in_" + secrets.token_hex(8), "object": "invoice", "status": "paid",
                                  "amount_paid": inv["total_minor"],
                                  "metadata": {"lgw_invoice_id": inv["id"]}})  # fmt: skip
    assert deliver(pay_gateway.url, paid).json()["handled"] == "invoice_paid"
    assert late["api"].get("/v1/models").status_code == 200  # at once
    actions = sql.fetch("SELECT action, actor FROM audit_log WHERE target = $1 AND action LIKE 'tenant.%u%' "
                        "ORDER BY id", late["id"])  # fmt: skip
    assert [(a["action"], a["actor"]) for a in actions] == [("tenant.suspend", "billing"), ("tenant.resume", "billing")]

    # the operator waives: the tenant resumes and the rule leaves that invoice alone
    r = pay_admin.post(f"/admin/invoices/{waived_inv['id']}/waive")
    assert r.status_code == 200 and r.json()["tenant_resumed"] is True, r.text
    assert waived["api"].get("/v1/models").status_code == 200
    assert waived["id"] not in pay_admin.post("/admin/billing/dunning/run").json()["suspended"]
    assert waived["api"].get("/v1/models").status_code == 200
    # the check is a pgqueuer schedule of the gateway's payments worker: this gateway's (BILLING_DUNNING_SCHEDULE);
    # other Stripe-enabled gateways of the session (the console's Billing page tests) register the default one
    schedules = sql.fetch("SELECT expression FROM pgqueuer_schedules WHERE entrypoint = 'billing_dunning'")
    assert {"expression": "0 3 1 1 *"} in schedules, schedules
