"""How the gateway's HTTP server treats client connections."""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import ARTIFACTS
from tests.support.processes import GatewayProcess
from tests.support.sql import Sql

_UVICORN_DEFAULT_KEEP_ALIVE_S = 5


def _get(sock: socket.socket, path: str) -> bytes:
    """One request on the connection; reads the whole answer (head and Content-Length body), returns its status
    line."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nhost: gateway\r\n\r\n".encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += _recv(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    length = next(
        int(v) for k, _, v in (h.partition(b":") for h in head.split(b"\r\n")) if k.lower() == b"content-length"
    )
    while len(body) < length:
        body += _recv(sock)
    assert len(body) == length, (head, body)  # nothing of this answer is left for the next one to read
    return head.split(b"\r\n", 1)[0]


def _recv(sock: socket.socket) -> bytes:
    chunk = sock.recv(65536)
    if not chunk:
        raise ConnectionError("closed by the gateway")
    return chunk


def test_idle_connection_outlives_uvicorns_default_keep_alive(gateway: GatewayProcess) -> None:
    """A load balancer keeps idle connections to its backends (AWS ALB: 60 s) and reuses them; a backend that
    closed one first makes it answer 502. The gateway keeps them open for GATEWAY_KEEP_ALIVE (75 s), not 5."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        assert _get(sock, "/healthz").startswith(b"HTTP/1.1 200")
        time.sleep(_UVICORN_DEFAULT_KEEP_ALIVE_S + 1.5)
        assert _get(sock, "/healthz").startswith(b"HTTP/1.1 200")


_LIMIT = 4


@pytest.fixture(scope="module")
def limited_gateway(gateway_env: dict[str, str]) -> Iterator[GatewayProcess]:
    ARTIFACTS.mkdir(exist_ok=True)
    gw = GatewayProcess({**gateway_env, "GATEWAY_LIMIT_CONCURRENCY": str(_LIMIT)}, ARTIFACTS / "gateway-limited.log")
    gw.start()
    yield gw
    gw.stop()


def test_connections_past_the_limit_are_answered_503(limited_gateway: GatewayProcess) -> None:
    """Slow or idle clients hold connections; past GATEWAY_LIMIT_CONCURRENCY uvicorn answers 503 at once instead
    of taking more, and serves again when they go."""
    address = ("127.0.0.1", limited_gateway.port)
    held = [socket.create_connection(address, timeout=10) for _ in range(_LIMIT)]  # open, nothing sent
    try:
        deadline, status = time.monotonic() + 10, b""
        while time.monotonic() < deadline:  # the server takes the held connections in as its loop gets to them
            with socket.create_connection(address, timeout=10) as extra:
                status = _get(extra, "/healthz")
            if status.startswith(b"HTTP/1.1 503"):
                break
            time.sleep(0.1)
        assert status.startswith(b"HTTP/1.1 503"), status
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.create_connection(address, timeout=10) as sock:
            status = _get(sock, "/healthz")
        if status.startswith(b"HTTP/1.1 200"):
            break
        time.sleep(0.1)
    assert status.startswith(b"HTTP/1.1 200"), status


_PROXY = "127.0.0.2"  # a second loopback address: a peer other than 127.0.0.1 (which uvicorn trusts by default)


@pytest.fixture(scope="module")
def proxied_gateway(gateway_env: dict[str, str]) -> Iterator[GatewayProcess]:
    ARTIFACTS.mkdir(exist_ok=True)
    gw = GatewayProcess({**gateway_env, "GATEWAY_FORWARDED_ALLOW_IPS": _PROXY}, ARTIFACTS / "gateway-proxied.log")
    gw.start()
    yield gw
    gw.stop()


def test_forwarded_for_is_believed_only_from_a_trusted_proxy(
    proxied_gateway: GatewayProcess, admin_token: str, sql: Sql
) -> None:
    """Audit rows record the client a trusted proxy names in X-Forwarded-For; anyone else's header is ignored."""

    def create_tenant(source: str) -> str:
        with httpx.Client(
            transport=httpx.HTTPTransport(local_address=source),
            base_url=proxied_gateway.url,
            headers={"Authorization": f"Bearer {admin_token}", "X-Forwarded-For": "203.0.113.7"},
        ) as client:
            r = client.post("/admin/tenants", json={"name": f"fwd-{secrets.token_hex(4)}"})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def audited_ip(tenant: str) -> str:
        return str(sql.scalar("SELECT ip FROM audit_log WHERE action = 'tenant.create' AND target = $1", tenant))

    assert audited_ip(create_tenant(_PROXY)) == "203.0.113.7"
    assert audited_ip(create_tenant("127.0.0.1")) == "127.0.0.1"
