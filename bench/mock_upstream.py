"""A fast mock of vLLM's OpenAI server, so that load tests measure the gateway and not the engine.

    python -m bench.mock_upstream --port 8100 --latency-ms 5

A raw asyncio HTTP/1.1 server (keep-alive, uvloop when installed) answering like vLLM: /health, /v1/models,
/v1/chat/completions and /v1/completions, non-streaming JSON and SSE streams. Every answer waits
--latency-ms (the time to first token); a stream then sends --tokens content chunks, --token-interval-ms
apart, and the usage chunk (`"choices": []`) before `data: [DONE]` when stream_options.include_usage is set.
Usage numbers are realistic: prompt tokens ≈ prompt characters / 4, completion tokens = chunks sent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

MODEL = "tiny-base"
_MODELS = json.dumps(
    {
        "object": "list",
        "data": [
            {
                "id": MODEL,
                "object": "model",
                "created": 0,
                "owned_by": "vllm",
                "root": "/models/tiny-base",
                "parent": None,
                "max_model_len": 1024,
            }
        ],
    }
).encode()
_STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\n\r\n"
)
_WORDS = [" The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", "."]


class Options:
    def __init__(self, latency_ms: float, tokens: int, token_interval_ms: float) -> None:
        self.latency = latency_ms / 1000
        self.tokens = tokens
        self.interval = token_interval_ms / 1000


def _prompt_tokens(body: dict[str, Any]) -> int:
    if "messages" in body:
        text = "".join(str(m.get("content", "")) for m in body["messages"] if isinstance(m, dict))
        return 8 + len(text) // 4  # the chat template's tokens plus the text
    return max(1, len(str(body.get("prompt", ""))) // 4)


def _response(status: int, body: bytes, content_type: bytes = b"application/json") -> bytes:
    reason = {200: b"OK", 400: b"Bad Request", 404: b"Not Found"}.get(status, b"Error")
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n" % (status, reason, content_type, len(body))
        + body
    )


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class Answer:
    """The pieces of one completion: ids, text, usage."""

    def __init__(self, path: str, body: dict[str, Any], tokens: int) -> None:
        self.chat = path.endswith("/chat/completions")
        self.id = ("chatcmpl-" if self.chat else "cmpl-") + f"{time.perf_counter_ns():x}"
        self.model = str(body.get("model") or MODEL)
        self.created = int(time.time())
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or tokens
        self.n = max(1, min(tokens, int(max_tokens)))
        self.words = [_WORDS[i % len(_WORDS)] for i in range(self.n)]
        prompt = _prompt_tokens(body)
        self.usage = {"prompt_tokens": prompt, "total_tokens": prompt + self.n, "completion_tokens": self.n}

    def full(self) -> bytes:
        text = "".join(self.words)
        if self.chat:
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": text, "tool_calls": []},
                "logprobs": None,
                "finish_reason": "length",
                "stop_reason": None,
            }
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "length", "stop_reason": None}
            obj = "text_completion"
        return json.dumps(
            {
                "id": self.id,
                "object": obj,
                "created": self.created,
                "model": self.model,
                "choices": [choice],
                "usage": self.usage,
                "prompt_logprobs": None,
            }
        ).encode()

    def event(self, i: int) -> bytes:
        last = i == self.n - 1
        if self.chat:
            delta: dict[str, Any] = {"content": self.words[i]}
            if i == 0:
                delta["role"] = "assistant"
            choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None}
            obj = "chat.completion.chunk"
        else:
            choice = {"index": 0, "text": self.words[i], "logprobs": None}
            obj = "text_completion"
        choice["finish_reason"] = "length" if last else None
        chunk = {"id": self.id, "object": obj, "created": self.created, "model": self.model, "choices": [choice]}
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    def usage_event(self) -> bytes:
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        chunk = {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": self.usage,
        }
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"


class Http(asyncio.Protocol):
    """One keep-alive connection; requests on it are answered in order."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.queue: asyncio.Queue[tuple[str, str, bytes] | None] = asyncio.Queue()
        self.worker: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses
        self.worker = asyncio.ensure_future(self._serve())

    def connection_lost(self, exc: Exception | None) -> None:
        self.queue.put_nowait(None)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1").split("\r\n")
            length = 0
            for line in head[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            method, path, _ = head[0].split(" ", 2)
            self.queue.put_nowait((method, path.split("?", 1)[0], body))

    async def _serve(self) -> None:
        while (item := await self.queue.get()) is not None:
            if self.transport is None or self.transport.is_closing():
                return
            method, path, body = item
            await self._answer(method, path, body)

    async def _answer(self, method: str, path: str, raw: bytes) -> None:
        t = self.transport
        assert t is not None
        if path == "/health":
            t.write(_response(200, b""))
            return
        if path == "/v1/models":
            t.write(_response(200, _MODELS))
            return
        if method != "POST" or path not in ("/v1/chat/completions", "/v1/completions"):
            t.write(_response(404, b'{"error": {"message": "not found", "type": "NotFoundError", "code": 404}}'))
            return
        try:
            body = json.loads(raw)
        except ValueError:
            t.write(_response(400, b'{"error": {"message": "bad json", "type": "BadRequestError", "code": 400}}'))
            return
        answer = Answer(path, body, self.options.tokens)
        await asyncio.sleep(self.options.latency)
        if not body.get("stream"):
            t.write(_response(200, answer.full()))
            return
        t.write(_STREAM_HEAD)
        for i in range(answer.n):
            if i and self.options.interval:
                await asyncio.sleep(self.options.interval)
            t.write(_chunk(answer.event(i)))
        options = body.get("stream_options") or {}
        if isinstance(options, dict) and options.get("include_usage"):
            t.write(_chunk(answer.usage_event()))
        t.write(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")


async def serve(host: str, port: int, options: Options) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Http(options), host, port, backlog=4096, reuse_address=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8100)
    p.add_argument("--latency-ms", type=float, default=5.0, help="time to the first byte/token (default 5)")
    p.add_argument("--tokens", type=int, default=16, help="completion tokens per answer (default 16)")
    p.add_argument("--token-interval-ms", type=float, default=0.0, help="gap between stream chunks (default 0)")
    args = p.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(args.host, args.port, Options(args.latency_ms, args.tokens, args.token_interval_ms)))


if __name__ == "__main__":
    main()
