"""A kept-alive connection the engine has closed is not a dead engine (no engine needed: a raw HTTP server).

The server below answers the first request on each connection and closes the connection when a second one
arrives on it: what a server does whose keep-alive timer fired while this process was held back (on a starved
host our idle clock starts late, when we got round to releasing the connection).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from gateway.engine.client import EngineClient, EngineInfo
from gateway.engine.pool import AdapterRef, EnginePool
from gateway.errors import EngineUnavailable
from gateway.metrics import Metrics
from gateway.settings import EngineSettings, MetricsSettings


class OneRequestPerConnection(asyncio.Protocol):
    connections = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport, self.answered, self.buffer = transport, False, b""
        OneRequestPerConnection.connections += 1

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if b"\r\n\r\n" not in self.buffer:
            return
        if self.answered:  # a second request on a kept-alive connection: the server had closed it
            self.transport.close()
            return
        self.answered, self.buffer = True, b""
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")


@contextlib.asynccontextmanager
async def engine_url() -> AsyncIterator[str]:
    OneRequestPerConnection.connections = 0
    server = await asyncio.get_running_loop().create_server(OneRequestPerConnection, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


def settings(url: str) -> EngineSettings:
    return EngineSettings(ENGINE_URL=url)  # type: ignore[call-arg]


async def test_health_checks_never_reuse_a_connection() -> None:
    async with engine_url() as url:
        client = EngineClient(settings(url))
        try:
            assert await asyncio.gather(client.health(), client.health()) == ["ok", "ok"]
            # With pooled connections both of those would now be stale, and this check (aiohttp retries a GET
            # once) would fail on both and call the engine down.
            assert await client.health() == "ok"
            assert OneRequestPerConnection.connections == 3
        finally:
            await client.aclose()


async def test_a_call_whose_connection_broke_is_retried_while_the_engine_answers() -> None:
    async with engine_url() as url:
        pool = EnginePool(settings(url), Metrics(MetricsSettings()), ready_adapters=_no_adapters)
        member = pool.members[0]
        member.info = EngineInfo(base_model="tiny", max_model_len=64, max_lora_rank=8)
        pool._set_up(member, True)
        tries = 0

        async def flaky(client: EngineClient) -> str:
            nonlocal tries
            tries += 1
            if tries <= 3:
                raise EngineUnavailable()
            return "answer"

        try:
            async with contextlib.AsyncExitStack() as held:
                _, result = await pool.send("tiny", None, flaky, held)
            assert (result, tries, member.up) == ("answer", 4, True)

            tries = -10  # never answers: after the retries the client hears the connection broke
            async with contextlib.AsyncExitStack() as held:
                with pytest.raises(EngineUnavailable) as err:
                    await pool.send("tiny", None, flaky, held)
            assert "No engine serving" not in err.value.message and member.up and member.in_flight == 0
        finally:
            await pool.aclose()


async def _no_adapters(base_model: str) -> list[AdapterRef]:
    return []
