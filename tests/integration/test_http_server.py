"""How the gateway's HTTP server treats client connections."""

from __future__ import annotations

import socket
import time

from tests.support.processes import GatewayProcess

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
