"""The upload's multipart form (text fields capped, files on disk) and the concurrent-upload bound."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import httpx
import pytest

from gateway.adapters.form import MAX_FIELD_BYTES, read_upload_form
from gateway.adapters.slots import UploadSlots
from gateway.errors import InvalidRequest, PayloadTooLarge, RateLimited


def multipart(data: dict[str, str], files: dict[str, bytes]) -> tuple[bytes, bytes]:
    request = httpx.Request("POST", "http://x/", data=data, files={n: (n, d) for n, d in files.items()})
    boundary = request.headers["content-type"].split("boundary=")[1].encode()
    return request.read(), boundary


class Body:
    """The body in 64 KiB chunks, as a server hands it over, counting what the parser took."""

    def __init__(self, raw: bytes) -> None:
        self.raw, self.taken = raw, 0

    async def chunks(self) -> AsyncIterator[bytes]:
        while self.taken < len(self.raw):
            chunk = self.raw[self.taken : self.taken + 65536]
            self.taken += len(chunk)
            yield chunk


def test_fields_and_files_are_read_and_files_are_on_disk() -> None:
    raw, boundary = multipart({"name": "mine", "base_model": "tiny"}, {"a.tar.gz": os.urandom(3_000_000)})
    form = asyncio.run(read_upload_form(Body(raw).chunks(), boundary))
    try:
        assert form.fields == {"name": "mine", "base_model": "tiny"}
        handle = form.files["a.tar.gz"]
        assert os.fstat(handle.fileno()).st_size == 3_000_000  # a real file, not a buffer in memory
        assert len(handle.read()) == 3_000_000
    finally:
        form.close()


def test_an_8_mib_text_field_is_refused_at_the_cap() -> None:
    raw, boundary = multipart({"name": "x" * (8 << 20)}, {"a.tar.gz": b"..."})
    body = Body(raw)
    with pytest.raises(PayloadTooLarge, match="'name'") as refused:
        asyncio.run(read_upload_form(body.chunks(), boundary))
    assert refused.value.param == "name" and str(MAX_FIELD_BYTES) in refused.value.message
    assert body.taken <= 2 * 65536  # not the 8 MiB


def test_too_many_parts_and_garbage_are_400() -> None:
    raw, boundary = multipart({f"f{i}": "v" for i in range(20)}, {"a": b""})
    with pytest.raises(InvalidRequest, match="too many parts"):
        asyncio.run(read_upload_form(Body(raw).chunks(), boundary))
    with pytest.raises(InvalidRequest, match="malformed"):
        asyncio.run(read_upload_form(Body(b"--nope\r\nnot a part").chunks(), b"nope"))


def test_concurrent_uploads_are_bounded_per_tenant_and_in_all() -> None:
    slots = UploadSlots(per_tenant=2, total=3)
    with slots.hold("a"), slots.hold("a"):
        with pytest.raises(RateLimited, match="ADAPTER_MAX_CONCURRENT_UPLOADS_PER_TENANT"), slots.hold("a"):
            pass
        with slots.hold("b"), pytest.raises(RateLimited, match="ADAPTER_MAX_CONCURRENT_UPLOADS\\)"), slots.hold("c"):
            pass
    assert not slots.held  # every slot given back, refused ones included
    with slots.hold("a"), slots.hold("a"):
        pass
