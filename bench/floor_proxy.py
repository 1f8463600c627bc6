"""The floor: the leanest proxy on the gateway's own HTTP stack, measured beside it to show what is left.

    UPSTREAM=http://127.0.0.1:8100 python -m uvicorn bench.floor_proxy:app --port 8200

A raw ASGI app on uvicorn (httptools, uvloop: as the gateway runs) that forwards each POST body to the upstream
with one shared aiohttp session (as gateway/engine/client.py does) and relays the answer unchanged: JSON whole,
a stream chunk by chunk. No auth, no parsing, no limits, no metering, no metrics. What it adds over calling
the upstream directly is the cost of the HTTP server and client alone in Python on this machine: no gateway
on this stack can add less, whatever it does per request.
"""

from __future__ import annotations

import os
from typing import Any

import aiohttp

_UPSTREAM = os.environ.get("UPSTREAM", "http://127.0.0.1:8000")
_JSON = [(b"content-type", b"application/json")]
_SSE = [(b"content-type", b"text/event-stream")]
_session: aiohttp.ClientSession | None = None


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
    elif scope["type"] == "http":
        await _proxy(scope, receive, send)


async def _lifespan(receive: Any, send: Any) -> None:
    global _session
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            _session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if _session is not None:
                await _session.close()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _proxy(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert _session is not None
    if scope["method"] != "POST":  # readiness checks
        async with _session.get(_UPSTREAM + scope["path"]) as r:
            await _answer(send, r.status, _JSON, await r.read())
        return
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    headers = {"content-type": "application/json"}
    async with _session.post(_UPSTREAM + scope["path"], data=b"".join(chunks), headers=headers) as r:
        if r.content_type != "text/event-stream":
            await _answer(send, r.status, _JSON, await r.read())
            return
        await send({"type": "http.response.start", "status": r.status, "headers": _SSE})
        async for chunk in r.content.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


async def _answer(send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
