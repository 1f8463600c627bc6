"""How the gateway's HTTP server treats client connections."""

from __future__ import annotations

import socket
import time

from tests.support.processes import GatewayProcess

_UVICORN_DEFAULT_KEEP_ALIVE_S = 5


def _get(sock: socket.socket, path: str) -> bytes:
    sock.sendall(f"GET {path} HTTP/1.1\r\nhost: gateway\r\n\r\n".encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed by the gateway after {answer!r}")
        answer += chunk
    return answer.split(b"\r\n", 1)[0]


def test_idle_connection_outlives_uvicorns_default_keep_alive(gateway: GatewayProcess) -> None:
    """A load balancer keeps idle connections to its backends (AWS ALB: 60 s) and reuses them; a backend that
    closed one first makes it answer 502. The gateway keeps them open for GATEWAY_KEEP_ALIVE (75 s), not 5."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        assert _get(sock, "/healthz").startswith(b"HTTP/1.1 200")
        time.sleep(_UVICORN_DEFAULT_KEEP_ALIVE_S + 1.5)
        assert _get(sock, "/healthz").startswith(b"HTTP/1.1 200")
