"""Keys and adapters are cached in each gateway process; a change made through another process takes effect at
once (PostgreSQL NOTIFY), and a process that loses its listening connection stops trusting its cache."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import asyncpg
import httpx
import pytest

from gateway.cache import Invalidations
from tests.support.processes import GatewayProcess
from tests.support.sql import Sql

CHAT = {"model": "tiny-base", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


@pytest.fixture(scope="module")
def other(second_gateway: GatewayProcess) -> GatewayProcess:
    """A second gateway process on the same database; the admin changes go through the session's gateway."""
    return second_gateway


def _chat(gw: GatewayProcess, headers: dict[str, str], model: str = "tiny-base") -> httpx.Response:
    return httpx.post(f"{gw.url}/v1/chat/completions", json={**CHAT, "model": model}, headers=headers, timeout=60)


def _warm(gw: GatewayProcess, headers: dict[str, str], model: str = "tiny-base") -> None:
    for _ in range(3):  # the first lookups fill the cache
        assert _chat(gw, headers, model).status_code == 200


def test_key_revoked_elsewhere_is_refused_at_once(other: GatewayProcess, admin: httpx.Client, make_tenant: Any) -> None:
    t = make_tenant()
    _warm(other, t.headers)
    assert admin.delete(f"/admin/keys/{t.key_id}").status_code == 204
    r = _chat(other, t.headers)
    assert r.status_code == 401, r.text


def test_tenant_suspended_elsewhere_gets_403_at_once(
    other: GatewayProcess, admin: httpx.Client, make_tenant: Any
) -> None:
    t = make_tenant()
    _warm(other, t.headers)
    assert admin.patch(f"/admin/tenants/{t.id}", json={"suspended": True}).status_code == 200
    r = _chat(other, t.headers)
    assert r.status_code == 403 and r.json()["error"]["code"] == "account_suspended", r.text
    assert admin.patch(f"/admin/tenants/{t.id}", json={"suspended": False}).status_code == 200
    assert _chat(other, t.headers).status_code == 200


def test_limit_set_elsewhere_applies_at_once(other: GatewayProcess, admin: httpx.Client, make_tenant: Any) -> None:
    """A cached key carries its limits: only the notification can tell the other process of a new one."""
    t = make_tenant()
    _warm(other, t.headers)
    assert admin.patch(f"/admin/keys/{t.key_id}", json={"rpm_limit": 1}).status_code == 200
    first = _chat(other, t.headers)
    assert first.status_code == 200 and first.headers["x-ratelimit-limit-requests"] == "1", first.headers
    assert _chat(other, t.headers).status_code == 429


def test_adapter_deleted_elsewhere_is_gone_at_once(
    gateway: GatewayProcess, other: GatewayProcess, make_tenant: Any, register_adapter: Any
) -> None:
    t = make_tenant()
    deployment = register_adapter(t.id, "soon-gone", 3)
    _warm(other, t.headers, "soon-gone")
    r = httpx.delete(f"{gateway.url}/v1/adapters/{deployment['id']}", headers=t.headers, timeout=60)
    assert r.status_code == 200, r.text
    for model in ("soon-gone", deployment["id"]):
        r = _chat(other, t.headers, model)
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found", r.text


def test_cache_is_not_trusted_without_its_listening_connection(
    other: GatewayProcess, admin: httpx.Client, make_tenant: Any, sql: Sql
) -> None:
    """The listener is cut, then a limit changes: the notification is lost, the process must not serve its cache."""
    t = make_tenant()
    _warm(other, t.headers)
    assert other.proc is not None
    cut = sql.fetch(
        "SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE application_name = 'gateway-cache-listener'"
    )
    assert cut and all(r["ok"] for r in cut)
    time.sleep(0.05)  # the termination reaches the processes
    assert admin.patch(f"/admin/keys/{t.key_id}", json={"rpm_limit": 1}).status_code == 200
    first = _chat(other, t.headers)
    assert first.status_code == 200 and first.headers.get("x-ratelimit-limit-requests") == "1", first.headers
    assert _chat(other, t.headers).status_code == 429


def test_a_lost_listener_is_reported_and_stopping_it_is_not(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Operators read "channel lost" when the listening connection breaks, not when a gateway shuts down."""
    dsn = "postgresql://" + database_url.split("://", 1)[1]

    async def until(done: Any, what: str) -> None:
        """Poll: the listener's state has no event to wait on (ASYNC110 asks for one; this is a test)."""
        deadline = time.monotonic() + 10
        while not done() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        assert done(), what

    async def scenario() -> Invalidations:
        channel = Invalidations(dsn, ping_every_s=0.2)
        task = asyncio.create_task(channel.run())
        await until(lambda: channel.live, "the listener did not connect")
        admin = await asyncpg.connect(dsn)
        try:
            cut = await admin.fetch(
                "SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity "
                "WHERE application_name = 'gateway-cache-listener'"
            )
        finally:
            await admin.close()
        assert cut and all(r["ok"] for r in cut)
        await until(lambda: "channel lost" in caplog.text, "the cut was not reported")
        await until(lambda: channel.live, "the listener did not reconnect")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return channel

    with caplog.at_level(logging.INFO, logger="gateway.cache"):
        channel = asyncio.run(scenario())
    assert not channel.live  # stopped: the caches are bypassed, as while it is down
    assert caplog.text.count("channel lost") == 1, caplog.text  # the cut, not the stop
