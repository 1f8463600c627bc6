"""Invoices reach Stripe (localstripe on loopback) exactly once: twice synced, Stripe away, webhooks twice.

The outbox rows of these tests are made due at EPOCH and synced with `now` near EPOCH, so a pass only
touches this file's invoices, never the ones other tests leave pending at today's date.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import create_async_engine

from billing import invoices, ledger, prices, stripe_sync
from billing.ledger import AccountDefaults
from billing.settings import BillingSettings
from billing.sql import Alchemy
from gateway.settings import to_asyncpg_url
from tests.conftest import ARTIFACTS
from tests.support.processes import GatewayProcess
from tests.support.sql import Sql
from tests.support.stripe import API_KEY, WEBHOOK_SECRET, signed, stripe_get
from tests.support.stripe import wait_answers as _wait_answers

EPOCH = datetime(2001, 1, 1, tzinfo=UTC)
BACKOFF = 60


@pytest.fixture(scope="session")
def stripe_settings(localstripe: Any) -> BillingSettings:
    return BillingSettings(
        stripe_api_key=SecretStr(API_KEY),
        stripe_api_base=localstripe.url,
        stripe_webhook_secret=SecretStr(WEBHOOK_SECRET),
        stripe_timeout_seconds=2,
        stripe_network_retries=0,
        stripe_backoff_base_seconds=BACKOFF,
        stripe_backoff_cap_seconds=10 * BACKOFF,
        stripe_auto_advance=False,  # localstripe 1.15 answers 500 to the auto_advance parameter
    )


def make_invoice(database_url: str, period: str, usage: list[tuple[int, int, int, int]]) -> dict[str, Any]:
    """A tenant with usage on a model per (prompt price, completion price, prompt, completion); period closed."""

    async def run() -> dict[str, Any]:
        db = create_async_engine(to_asyncpg_url(database_url))
        tenant = "tnt_s" + secrets.token_hex(6)
        start = datetime.strptime(period, "%Y-%m").replace(tzinfo=UTC)
        try:
            async with db.begin() as conn:
                await conn.execute(
                    sa.text("INSERT INTO tenants (id, name, created_at) VALUES (:i, :i, now())"), {"i": tenant}
                )
                await ledger.open_account(conn, tenant, "postpaid", 0, "usd")
                rows = []
                for n, (pp, cp, p, c) in enumerate(usage):
                    model = f"m{n}-" + secrets.token_hex(4)
                    await prices.set_price(conn, model, pp, cp, "usd", start - timedelta(days=1))
                    rows.append({"request_id": "req_" + secrets.token_hex(10), "tenant_id": tenant,
                                 "adapter_id": None, "base_model": model, "prompt_tokens": p,
                                 "completion_tokens": c, "started_at": start + timedelta(hours=n)})  # fmt: skip
                await ledger.charge_usage(Alchemy(conn), rows, AccountDefaults("postpaid", 0, "usd"))
                [inv] = [i for i in await invoices.close_period(conn, period) if i["tenant_id"] == tenant]
                await conn.execute(
                    sa.text("UPDATE stripe_outbox SET next_attempt_at = :t WHERE invoice_id = :i"),
                    {"t": EPOCH, "i": inv["id"]},
                )
            return inv
        finally:
            await db.dispose()

    return asyncio.run(run())


def sync(database_url: str, settings: BillingSettings, now: datetime) -> stripe_sync.SyncReport:
    async def run() -> stripe_sync.SyncReport:
        db = create_async_engine(to_asyncpg_url(database_url))
        try:
            return await stripe_sync.sync_once(db, settings, now=now)
        finally:
            await db.dispose()

    return asyncio.run(run())


def stripe_invoices_of(localstripe: Any, invoice_id: str) -> list[dict[str, Any]]:
    """Every Stripe invoice, of any customer, that carries a line of our invoice."""
    found = stripe_get(localstripe, "/v1/invoices", limit=100)["data"]
    return [
        i for i in found if any(line["metadata"].get("lgw_invoice_id") == invoice_id for line in i["lines"]["data"])
    ]


def our_lines(stripe_invoice: dict[str, Any]) -> list[int]:
    lines = [line for line in stripe_invoice["lines"]["data"] if "lgw_line" in line["metadata"]]
    return [line["amount"] for line in sorted(lines, key=lambda line: int(line["metadata"]["lgw_line"]))]


def pending_items_of(localstripe: Any, customer: str) -> list[dict[str, Any]]:
    return list(stripe_get(localstripe, "/v1/invoiceitems", customer=customer, limit=100)["data"])


USAGE = [(333_333, 777_777, 12_345, 6_789), (1_000_000, 2_000_000, 10, 20), (0, 0, 5, 5)]


def test_sync_sends_one_invoice_and_syncing_again_sends_nothing(
    database_url: str, sql: Sql, localstripe: Any, stripe_settings: BillingSettings
) -> None:
    inv = make_invoice(database_url, "2024-01", USAGE)
    assert len(inv["lines"]) == 3 and inv["total_minor"] > 0

    report = sync(database_url, stripe_settings, EPOCH)
    assert report.synced == [inv["id"]] and report.failed == {}
    row = sql.one("SELECT * FROM stripe_outbox WHERE invoice_id = $1", inv["id"])
    assert row["status"] == "done" and row["done_at"] is not None and row["last_error"] is None
    stripe_id = sql.scalar("SELECT stripe_invoice_id FROM invoices WHERE id = $1", inv["id"])
    customer = sql.scalar("SELECT stripe_customer_id FROM billing_accounts WHERE tenant_id = $1", inv["tenant_id"])
    assert stripe_id and customer

    customers = stripe_get(localstripe, "/v1/customers", limit=100)["data"]
    assert [c["id"] for c in customers if c["metadata"].get("lgw_tenant_id") == inv["tenant_id"]] == [customer]
    [pushed] = stripe_invoices_of(localstripe, inv["id"])
    assert pushed["id"] == stripe_id and pushed["customer"] == customer
    assert our_lines(pushed) == [line["amount_minor"] for line in inv["lines"]]
    assert sum(our_lines(pushed)) == inv["total_minor"] == pushed["total"]  # the $0 subscription adds nothing
    assert "completion tokens" in pushed["lines"]["data"][-1]["description"]

    # a second pass: the row is done, nothing goes to Stripe
    assert sync(database_url, stripe_settings, EPOCH + timedelta(days=1)).synced == []
    # a crash after Stripe made the invoice but before our commit: the row is pending again, and the retry
    # finds the invoice an earlier try made instead of making another one
    sql.fetch("UPDATE stripe_outbox SET status = 'pending', done_at = NULL WHERE invoice_id = $1", inv["id"])
    sql.fetch("UPDATE invoices SET stripe_invoice_id = NULL WHERE id = $1", inv["id"])
    assert sync(database_url, stripe_settings, EPOCH + timedelta(days=2)).synced == [inv["id"]]
    assert [i["id"] for i in stripe_invoices_of(localstripe, inv["id"])] == [stripe_id]
    assert sql.scalar("SELECT stripe_invoice_id FROM invoices WHERE id = $1", inv["id"]) == stripe_id
    assert pending_items_of(localstripe, customer) == []  # no second set of items waiting either


def test_stripe_outage_is_retried_later_and_invoiced_once(
    database_url: str, sql: Sql, localstripe: Any, stripe_settings: BillingSettings
) -> None:
    inv = make_invoice(database_url, "2024-02", USAGE[:2])
    os.kill(localstripe.pid, signal.SIGSTOP)  # frozen, not killed: localstripe keeps its state in memory
    try:
        report = sync(database_url, stripe_settings, EPOCH)
        assert report.synced == [] and "unavailable" in report.failed[inv["id"]].lower()
        row = sql.one("SELECT * FROM stripe_outbox WHERE invoice_id = $1", inv["id"])
        assert row["status"] == "pending" and row["attempts"] == 1 and row["done_at"] is None
        assert row["next_attempt_at"] == EPOCH + timedelta(seconds=BACKOFF)
        assert "APIConnectionError" in row["last_error"]
        assert sql.scalar("SELECT stripe_invoice_id FROM invoices WHERE id = $1", inv["id"]) is None
        # not due yet: the next pass leaves it alone
        assert sync(database_url, stripe_settings, EPOCH + timedelta(seconds=BACKOFF - 1)).failed == {}
        assert sql.scalar("SELECT attempts FROM stripe_outbox WHERE invoice_id = $1", inv["id"]) == 1
    finally:
        os.kill(localstripe.pid, signal.SIGCONT)
    _wait_answers(localstripe)

    report = sync(database_url, stripe_settings, EPOCH + timedelta(seconds=BACKOFF))
    assert report.synced == [inv["id"]] and report.failed == {}
    row = sql.one("SELECT * FROM stripe_outbox WHERE invoice_id = $1", inv["id"])
    assert row["status"] == "done" and row["attempts"] == 2 and row["last_error"] is None
    [pushed] = stripe_invoices_of(localstripe, inv["id"])
    assert pushed["id"] == sql.scalar("SELECT stripe_invoice_id FROM invoices WHERE id = $1", inv["id"])
    assert our_lines(pushed) == [line["amount_minor"] for line in inv["lines"]]
    # the frozen server had only been asked a read, so nothing it ran late was made twice
    customers = stripe_get(localstripe, "/v1/customers", limit=100)["data"]
    assert len([c for c in customers if c["metadata"].get("lgw_tenant_id") == inv["tenant_id"]]) == 1


def test_backoff_doubles_and_is_capped(stripe_settings: BillingSettings) -> None:
    delays = [stripe_sync.backoff(n, stripe_settings).total_seconds() for n in (1, 2, 3, 4, 5, 50)]
    assert delays == [BACKOFF, 2 * BACKOFF, 4 * BACKOFF, 8 * BACKOFF, 10 * BACKOFF, 10 * BACKOFF]


# --- webhooks, through a gateway process that knows the webhook secret ---


@pytest.fixture(scope="module")
def stripe_gateway(gateway_env: dict[str, str]) -> Iterator[GatewayProcess]:
    ARTIFACTS.mkdir(exist_ok=True)
    gw = GatewayProcess({**gateway_env, "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET}, ARTIFACTS / "gateway-stripe.log")
    gw.start()
    yield gw
    gw.stop()


def deliver(gw: GatewayProcess, event: dict[str, Any], **sign: Any) -> httpx.Response:
    payload, header = signed(event, **sign)
    headers = {"Stripe-Signature": header, "Content-Type": "application/json"}
    return httpx.post(f"{gw.url}/webhooks/stripe", content=payload, headers=headers, timeout=30)


def event(type_: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {"id": "evt_" + secrets.token_hex(8), "object": "event", "type": type_, "data": {"object": obj}}


def test_paid_webhook_twice_marks_paid_once(
    database_url: str,
    sql: Sql,
    localstripe: Any,
    stripe_settings: BillingSettings,
    stripe_gateway: GatewayProcess,
) -> None:
    inv = make_invoice(database_url, "2024-03", USAGE[:1])
    assert sync(database_url, stripe_settings, EPOCH).synced == [inv["id"]]
    stripe_id = sql.scalar("SELECT stripe_invoice_id FROM invoices WHERE id = $1", inv["id"])
    obj = {**stripe_get(localstripe, f"/v1/invoices/{stripe_id}"), "status": "paid", "amount_paid": inv["total_minor"]}
    paid = event("invoice.paid", obj)
    balance_before = sql.scalar("SELECT balance_after_micros FROM ledger_entries WHERE tenant_id = $1 "
                                "ORDER BY id DESC LIMIT 1", inv["tenant_id"])  # fmt: skip

    first, again = deliver(stripe_gateway, paid), deliver(stripe_gateway, paid)  # Stripe delivers at least once
    also = deliver(stripe_gateway, event("invoice.payment_succeeded", obj))  # and sends both events
    assert first.status_code == again.status_code == also.status_code == 200, (first.text, again.text, also.text)
    assert first.json()["handled"] == "invoice_paid"
    assert sql.scalar("SELECT status FROM invoices WHERE id = $1", inv["id"]) == "paid"
    payments = sql.fetch("SELECT * FROM ledger_entries WHERE tenant_id = $1 AND kind = 'payment'", inv["tenant_id"])
    assert len(payments) == 1 and payments[0]["idempotency_key"] == f"stripe-paid-{stripe_id}"
    assert payments[0]["balance_after_micros"] == balance_before  # a payment settles, it adds no credit


def test_bad_signature_is_400_and_changes_nothing(database_url: str, sql: Sql, stripe_gateway: GatewayProcess) -> None:
    tenant = make_invoice(database_url, "2024-04", USAGE[1:2])["tenant_id"]
    topup = event("invoice.paid", {"id": "in_" + secrets.token_hex(8), "object": "invoice",
                                   "metadata": {"kind": "topup", "tenant_id": tenant, "amount": "500"}})  # fmt: skip
    for kwargs in ({"secret": "whsec_wrong"}, {"at": int(time.time()) - 3600}):
        r = deliver(stripe_gateway, topup, **kwargs)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["type"] == "invalid_request_error" and "signature" in r.json()["error"]["message"]
    r = httpx.post(f"{stripe_gateway.url}/webhooks/stripe", content=json.dumps(topup).encode(), timeout=30)
    assert r.status_code == 400 and "Stripe-Signature" in r.json()["error"]["message"]
    assert sql.scalar("SELECT count(*) FROM ledger_entries WHERE tenant_id = $1 AND kind = 'credit'", tenant) == 0


def test_top_up_paid_twice_credits_once_and_other_events_are_ignored(
    database_url: str, sql: Sql, stripe_gateway: GatewayProcess
) -> None:
    tenant = make_invoice(database_url, "2024-05", USAGE[1:2])["tenant_id"]
    before = sql.scalar("SELECT balance_after_micros FROM ledger_entries WHERE tenant_id = $1 ORDER BY id DESC "
                        "LIMIT 1", tenant)  # fmt: skip
    stripe_id = "in_" + secrets.token_hex(8)
    obj = {"id": stripe_id, "object": "invoice", "amount_paid": 500, "currency": "usd",
           "metadata": {"kind": "topup", "tenant_id": tenant, "amount": "500"}}  # fmt: skip
    paid = event("invoice.paid", obj)
    responses = [deliver(stripe_gateway, paid), deliver(stripe_gateway, paid),
                 deliver(stripe_gateway, event("invoice.payment_succeeded", obj))]  # fmt: skip
    assert [r.status_code for r in responses] == [200, 200, 200], [r.text for r in responses]
    assert responses[0].json()["handled"] == "topup_credited"
    credits = sql.fetch("SELECT * FROM ledger_entries WHERE tenant_id = $1 AND kind = 'credit'", tenant)
    assert len(credits) == 1 and credits[0]["idempotency_key"] == f"stripe-topup-{stripe_id}"
    assert credits[0]["balance_after_micros"] == before + 500 * 1_000_000

    for ignored in (event("customer.created", {"id": "cus_x", "object": "customer"}),
                    event("invoice.paid", {"id": "in_not_ours", "object": "invoice", "metadata": {}})):  # fmt: skip
        r = deliver(stripe_gateway, ignored)
        assert r.status_code == 200 and r.json()["handled"] is None, r.text


def stripe_post(proc: Any, path: str, **form: Any) -> dict[str, Any]:
    r = httpx.post(proc.url + path, data=form, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=5)
    r.raise_for_status()
    return dict(r.json())


def paid_top_up(localstripe: Any, tenant: str, currency: str, paid: int, asked: int) -> dict[str, Any]:
    """A top-up invoice paid by card in localstripe: `paid` in `currency`, its metadata asking `asked`."""
    customer = stripe_post(localstripe, "/v1/customers", email=f"{tenant}@example.com")["id"]
    plan = stripe_post(localstripe, "/v1/plans", id="p-" + secrets.token_hex(6), amount=0, currency=currency,
                       interval="month", **{"product[name]": "top-ups"})["id"]  # fmt: skip
    sub = stripe_post(localstripe, "/v1/subscriptions", customer=customer, **{"items[0][plan]": plan})["id"]
    stripe_post(localstripe, "/v1/invoiceitems", customer=customer, subscription=sub, amount=paid, currency=currency)
    inv = stripe_post(localstripe, "/v1/invoices", customer=customer, subscription=sub,
                      pending_invoice_items_behavior="include")  # fmt: skip
    meta = {"metadata[kind]": "topup", "metadata[tenant_id]": tenant, "metadata[amount]": str(asked)}
    stripe_post(localstripe, f"/v1/invoices/{inv['id']}", **meta)
    card = {"card[number]": "4242424242424242", "card[exp_month]": 12, "card[exp_year]": 2030, "card[cvc]": 123}
    token = stripe_post(localstripe, "/v1/tokens", **card)["id"]
    stripe_post(localstripe, f"/v1/customers/{customer}/sources", source=token)
    stripe_post(localstripe, f"/v1/invoices/{inv['id']}/pay")  # charges the card
    obj = stripe_get(localstripe, f"/v1/invoices/{inv['id']}")
    assert (obj["status"], obj["amount_paid"], obj["currency"]) == ("paid", paid, currency), obj
    return obj


def test_top_up_credits_what_was_paid_not_what_its_metadata_asked(
    database_url: str, sql: Sql, localstripe: Any, stripe_gateway: GatewayProcess
) -> None:
    tenant = make_invoice(database_url, "2024-06", USAGE[1:2])["tenant_id"]  # a usd account
    before = sql.scalar("SELECT balance_after_micros FROM ledger_entries WHERE tenant_id = $1 ORDER BY id DESC "
                        "LIMIT 1", tenant)  # fmt: skip
    obj = paid_top_up(localstripe, tenant, "usd", paid=700, asked=5000)
    r = deliver(stripe_gateway, event("invoice.paid", obj))
    assert r.status_code == 200 and r.json()["handled"] == "topup_credited", r.text
    [credit] = sql.fetch("SELECT * FROM ledger_entries WHERE tenant_id = $1 AND kind = 'credit'", tenant)
    assert credit["amount_micros"] == 700 * 1_000_000 and credit["balance_after_micros"] == before + 700 * 1_000_000


def test_top_up_paid_in_another_currency_is_refused_and_recorded(
    database_url: str, sql: Sql, localstripe: Any, stripe_gateway: GatewayProcess
) -> None:
    tenant = make_invoice(database_url, "2024-07", USAGE[1:2])["tenant_id"]  # a usd account
    obj = paid_top_up(localstripe, tenant, "eur", paid=700, asked=700)
    answers = [deliver(stripe_gateway, event(kind, obj)) for kind in ("invoice.paid", "invoice.payment_succeeded")]
    for r in answers:  # 200: Stripe must not retry for days what no retry can fix
        assert r.status_code == 200, r.text
        assert r.json()["handled"] == "topup_refused" and r.json()["refused"]["reason"] == "currency"
    assert sql.scalar("SELECT count(*) FROM ledger_entries WHERE tenant_id = $1 AND kind = 'credit'", tenant) == 0
    audited = sql.fetch("SELECT * FROM audit_log WHERE action = 'billing.topup_refused' AND target = $1", obj["id"])
    assert audited and audited[0]["actor"] == "stripe"
    detail = audited[0]["detail"]
    detail = json.loads(detail) if isinstance(detail, str) else detail
    assert (detail["currency"], detail["billing_currency"], detail["amount_paid"]) == ("eur", "usd", 700)


def test_reconciliation_compares_our_invoices_with_stripe(
    database_url: str, sql: Sql, localstripe: Any, stripe_settings: BillingSettings
) -> None:
    from gateway.accounts.reconcile import reconcile

    inv = make_invoice(database_url, "2024-05", USAGE[:1])
    assert inv["id"] in sync(database_url, stripe_settings, EPOCH).synced  # (other tests' due rows may go too)

    async def run() -> dict[str, Any]:
        db = create_async_engine(to_asyncpg_url(database_url))
        try:
            async with db.connect() as conn:
                return {r.tenant_id: r for r in await reconcile(conn, stripe_settings)}
        finally:
            await db.dispose()

    mine = asyncio.run(run())[inv["tenant_id"]]
    assert mine.sent_minor == mine.stripe_minor == inv["total_minor"] > 0
    assert not [p for p in mine.problems if "Stripe" in p]
    sql.fetch("UPDATE invoices SET total_minor = total_minor + 1 WHERE id = $1", inv["id"])  # plant a difference
    mine = asyncio.run(run())[inv["tenant_id"]]
    assert any("on Stripe" in p for p in mine.problems)
