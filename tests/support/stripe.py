"""localstripe for the tests: one server per session (conftest's `localstripe` fixture), read directly like
PostgreSQL, and Stripe-signed webhook deliveries for the events localstripe does not send itself."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.support.processes import free_port

API_KEY = "sk_test_lgw_" + secrets.token_hex(4)
WEBHOOK_SECRET = "whsec_" + secrets.token_hex(16)


def run_localstripe(workdir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """localstripe on a free port, started fresh (it keeps all state in memory) and stopped at the end."""
    port = free_port()
    log = (workdir / "localstripe.log").open("ab")
    exe = Path(sys.executable).parent / "localstripe"
    proc = subprocess.Popen([str(exe), "--port", str(port), "--from-scratch"], stdout=log, stderr=subprocess.STDOUT)
    proc.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    try:
        wait_answers(proc)
        yield proc
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        proc.wait(10)


def wait_answers(proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, "localstripe exited"
        try:
            stripe_get(proc, "/v1/customers", limit=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise TimeoutError("localstripe did not answer")


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}"}


def stripe_get(proc: Any, path: str, **params: Any) -> dict[str, Any]:
    """Read Stripe's state directly, as the tests read PostgreSQL directly."""
    r = httpx.get(proc.url + path, params=params, headers=_auth(), timeout=5)
    r.raise_for_status()
    return dict(r.json())


def stripe_post(proc: Any, path: str, data: dict[str, Any] | None = None) -> httpx.Response:
    """What Stripe.js or the Stripe dashboard would do (form-encoded, as Stripe takes it)."""
    return httpx.post(proc.url + path, data=data or {}, headers=_auth(), timeout=10)


def card(proc: Any, number: str) -> str:
    """A PaymentMethod for a test card number, as Stripe.js makes one from the card form."""
    form = {"type": "card", "card[number]": number, "card[exp_month]": "12", "card[exp_year]": "2030",
            "card[cvc]": "123"}  # fmt: skip
    r = stripe_post(proc, "/v1/payment_methods", form)
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def register_webhook(proc: Any, name: str, url: str, secret: str = WEBHOOK_SECRET) -> None:
    """localstripe delivers its events to `url` only once told to."""
    r = httpx.post(f"{proc.url}/_config/webhooks/{name}", data={"url": url, "secret": secret}, timeout=5)
    assert r.status_code == 200, r.text


def signed(event: dict[str, Any], secret: str = WEBHOOK_SECRET, at: int | None = None) -> tuple[bytes, str]:
    payload = json.dumps(event).encode()
    t = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return payload, f"t={t},v1={mac}"


def deliver(base_url: str, event: dict[str, Any], **sign: Any) -> httpx.Response:
    payload, header = signed(event, **sign)
    headers = {"Stripe-Signature": header, "Content-Type": "application/json"}
    return httpx.post(f"{base_url}/webhooks/stripe", content=payload, headers=headers, timeout=30)


def event(type_: str, obj: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    return {"id": event_id or "evt_" + secrets.token_hex(8), "object": "event", "type": type_,
            "created": int(time.time()), "data": {"object": obj}}  # fmt: skip


def gateway_env_with_stripe(gateway_env: dict[str, str], localstripe_url: str) -> dict[str, str]:
    """A test gateway's environment with Stripe (localstripe) configured: keys, webhook secret, its Stripe.js."""
    return {
        **gateway_env,
        "STRIPE_API_KEY": API_KEY,
        "STRIPE_API_BASE": localstripe_url,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "STRIPE_PUBLISHABLE_KEY": "pk_test_lgw",
        "STRIPE_JS_URL": f"{localstripe_url}/js.stripe.com/v3/",
        "STRIPE_AUTO_ADVANCE": "false",
        "STRIPE_NETWORK_RETRIES": "0",
        "STRIPE_SYNC_INTERVAL_SECONDS": "3600",
    }
