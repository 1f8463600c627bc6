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
from gateway.errors import EngineFailed, EngineUnavailable
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


class SetsACookie(asyncio.Protocol):
    """Answers every request with a Set-Cookie header and keeps each request's head."""

    heads: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport, self.buffer = transport, b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            SetsACookie.heads.append(head.lower())
            self.transport.write(b"HTTP/1.1 200 OK\r\nSet-Cookie: backend=a; Path=/\r\nContent-Length: 2\r\n\r\n{}")


class CutsItsAnswerShort(asyncio.Protocol):
    """Sends the head and part of the body of an answer, then closes: an engine that died while answering."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        self.transport.close()


@contextlib.asynccontextmanager
async def engine_url(protocol: type[asyncio.Protocol] = OneRequestPerConnection) -> AsyncIterator[str]:
    OneRequestPerConnection.connections = 0
    server = await asyncio.get_running_loop().create_server(protocol, "127.0.0.1", 0)
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
            # Two calls at once leave two kept-alive connections in the call pool, both stale for this server.
            answers = await asyncio.gather(client._request("GET", "/"), client._request("GET", "/"))
            assert [status for status, _ in answers] == [200, 200]
            # A check over that pool would reuse one, and (aiohttp retries a GET once) the other: "down".
            assert await client.health() == "ok"
            assert OneRequestPerConnection.connections == 3
        finally:
            await client.aclose()


async def test_checks_at_the_same_time_share_one() -> None:
    async with engine_url() as url:
        client = EngineClient(settings(url))
        try:
            assert await asyncio.gather(*(client.health() for _ in range(20))) == ["ok"] * 20
            assert OneRequestPerConnection.connections == 1
            assert await client.health() == "ok" and OneRequestPerConnection.connections == 2  # a new one after
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


async def test_an_answer_cut_short_is_an_engine_failure_not_retried() -> None:
    async with engine_url(CutsItsAnswerShort) as url:
        client = EngineClient(settings(url))
        try:
            with pytest.raises(EngineFailed):  # the engine had done the work: the pool does not send it again
                await client.post("/v1/completions", {"model": "tiny"})
        finally:
            await client.aclose()


async def test_no_cookie_rides_along_to_the_next_call() -> None:
    SetsACookie.heads = []
    async with engine_url(SetsACookie) as url:
        client = EngineClient(settings(url.replace("127.0.0.1", "localhost")))  # aiohttp keeps no IP's cookies
        try:
            for _ in range(2):
                assert (await client._request("GET", "/v1/models"))[0] == 200
            assert len(SetsACookie.heads) == 2 and not any(b"\r\ncookie:" in h for h in SetsACookie.heads)
        finally:
            await client.aclose()


async def _no_adapters(base_model: str) -> list[AdapterRef]:
    return []
