"""The bench's load generator must not count its own mistakes as the target's errors."""

from __future__ import annotations

import asyncio
import time

from bench import loadgen

_ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
_REQUEST = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}"


async def _server(keep_alive_s: float) -> asyncio.Server:
    """Answers every request with 200 and closes a connection left idle for `keep_alive_s`, as uvicorn does."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), keep_alive_s)
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                await reader.readexactly(length)
                writer.write(_ANSWER)
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


def test_open_loop_does_not_reuse_a_connection_the_server_closed() -> None:
    async def scenario() -> loadgen.Stats:
        server = await _server(keep_alive_s=0.1)
        port = server.sockets[0].getsockname()[1]
        stats = loadgen.Stats()
        loop = loadgen._OpenLoop("127.0.0.1", port, iter([_REQUEST] * 2), stats, measure_from=0.0)
        await loop._one(time.perf_counter())
        assert len(loop.idle) == 1  # kept alive for the next request
        await asyncio.sleep(0.3)  # the server closes it meanwhile
        await loop._one(time.perf_counter())
        for _, writer, _ in loop.idle:
            writer.close()
        server.close()
        await server.wait_closed()
        return stats

    stats = asyncio.run(scenario())
    assert stats.errors == 0, stats.failures
    assert stats.ok == 2


def test_open_loop_expires_idle_connections_before_servers_do() -> None:
    """A connection idle for IDLE_EXPIRY_S is not reused even if it still looks open: the server may be closing it
    at that very moment."""

    async def scenario() -> bool:
        server = await _server(keep_alive_s=30)
        port = server.sockets[0].getsockname()[1]
        loop = loadgen._OpenLoop("127.0.0.1", port, iter([_REQUEST] * 2), loadgen.Stats(), measure_from=0.0)
        await loop._one(time.perf_counter())
        reader, writer, since = loop.idle[0]
        loop.idle[0] = (reader, writer, since - loadgen.IDLE_EXPIRY_S)  # as if idle that long
        await loop._one(time.perf_counter())
        replaced = len(loop.idle) == 1 and loop.idle[0][1] is not writer and writer.is_closing()
        for _, w, _ in loop.idle:
            w.close()
        server.close()
        await server.wait_closed()
        return replaced

    assert asyncio.run(scenario())
