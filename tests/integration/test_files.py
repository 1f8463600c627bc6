"""The Files API with the official openai SDK: OpenAI's shapes, fine-tune validation, quota, tenant isolation."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from openai import BadRequestError, NotFoundError, OpenAI, RateLimitError

from devstack.finetune_data import jsonl
from tests.conftest import ARTIFACTS, TenantHandle
from tests.support.processes import GatewayProcess


def _client(url: str, tenant: TenantHandle) -> OpenAI:
    return OpenAI(base_url=f"{url}/v1", api_key=tenant.key, max_retries=0)


@pytest.fixture(scope="module")
def tenant(make_tenant: Any) -> TenantHandle:
    return make_tenant()


@pytest.fixture(scope="module")
def client(gateway: GatewayProcess, tenant: TenantHandle) -> OpenAI:
    return _client(gateway.url, tenant)


def test_upload_list_retrieve_content_delete(client: OpenAI) -> None:
    data = jsonl()
    created = client.files.create(file=("identity.jsonl", io.BytesIO(data)), purpose="fine-tune")
    assert created.id.startswith("file-") and created.object == "file"
    assert (created.bytes, created.filename, created.purpose) == (len(data), "identity.jsonl", "fine-tune")
    assert created.created_at > 0 and created.status == "processed"
    assert client.files.retrieve(created.id) == created
    assert created.id in [f.id for f in client.files.list(purpose="fine-tune")]
    assert client.files.content(created.id).read() == data
    deleted = client.files.delete(created.id)
    assert (deleted.id, deleted.deleted) == (created.id, True)
    with pytest.raises(NotFoundError):
        client.files.retrieve(created.id)
    assert created.id not in [f.id for f in client.files.list()]


def test_list_pages_with_after_and_limit(client: OpenAI) -> None:
    ids = [client.files.create(file=(f"{i}.jsonl", io.BytesIO(jsonl())), purpose="fine-tune").id for i in range(3)]
    first = client.files.list(limit=2, order="asc", purpose="fine-tune")
    seen = [f.id for f in first]  # the SDK follows `after` through every page
    assert [i for i in seen if i in ids] == ids


@pytest.mark.parametrize(
    ("lines", "where"),
    [
        (
            ['{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}', "not json"],
            "Line 2",
        ),
        (['{"messages": [{"role": "user", "content": "hi"}]}'], "Line 1: no assistant message"),
        (
            [
                '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}',
                '{"messages": [{"role": "robot", "content": "x"}]}',
            ],
            "Line 2: messages[0].role",
        ),
        (['{"prompt": "old format"}'], "Line 1"),
        ([], "no training examples"),
    ],
)
def test_bad_fine_tune_file_is_a_400_naming_the_first_bad_line(client: OpenAI, lines: list[str], where: str) -> None:
    with pytest.raises(BadRequestError) as bad:
        client.files.create(file=("bad.jsonl", io.BytesIO("\n".join(lines).encode())), purpose="fine-tune")
    body: Any = bad.value.body
    assert where in body["message"] and body["code"] == "invalid_training_file" and body["param"] == "file"


def test_invalid_utf8_and_a_conversation_longer_than_the_context(client: OpenAI) -> None:
    with pytest.raises(BadRequestError) as bad:
        client.files.create(file=("bad.jsonl", io.BytesIO(b'{"messages": []}\n\xff\xfe')), purpose="fine-tune")
    assert "Line 1" in bad.value.body["message"]  # type: ignore[index]
    with pytest.raises(BadRequestError) as bad:
        client.files.create(file=("bad.jsonl", io.BytesIO(b"\xff\xfe\n")), purpose="fine-tune")
    assert "Line 1 is not valid UTF-8" in bad.value.body["message"]  # type: ignore[index]
    long = {"messages": [{"role": "user", "content": "hello " * 5000}, {"role": "assistant", "content": "ok"}]}
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]}
    data = (json.dumps(good) + "\n" + json.dumps(long) + "\n").encode()
    with pytest.raises(BadRequestError) as bad:
        client.files.create(file=("long.jsonl", io.BytesIO(data)), purpose="fine-tune")
    assert "Line 2: the conversation is" in bad.value.body["message"]  # type: ignore[index]
    assert "context length" in bad.value.body["message"]  # type: ignore[index]


def test_unknown_purpose_is_a_400(client: OpenAI) -> None:
    with pytest.raises(BadRequestError) as bad:
        client.files.create(file=("x.jsonl", io.BytesIO(jsonl())), purpose="batch")
    assert bad.value.body["param"] == "purpose"  # type: ignore[index]


def test_another_tenants_file_is_a_404_everywhere(client: OpenAI, gateway: GatewayProcess, make_tenant: Any) -> None:
    mine = client.files.create(file=("mine.jsonl", io.BytesIO(jsonl())), purpose="fine-tune")
    stranger = _client(gateway.url, make_tenant())
    for probe in (stranger.files.retrieve, stranger.files.content, stranger.files.delete):
        with pytest.raises(NotFoundError) as missing:
            probe(mine.id)
        assert missing.value.body["code"] == "file_not_found"  # type: ignore[index]
    assert mine.id not in [f.id for f in stranger.files.list()]
    assert client.files.retrieve(mine.id).id == mine.id  # still there


@pytest.fixture(scope="module")
def small_quota_gateway(gateway_env: dict[str, str]) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(
        {**gateway_env, "FILES_TENANT_QUOTA_BYTES": str(2 * len(jsonl()) + 10)}, ARTIFACTS / "gateway-quota.log"
    )
    gw.start()
    yield gw
    gw.stop()


def test_storage_quota_per_tenant(small_quota_gateway: GatewayProcess, make_tenant: Any) -> None:
    client = _client(small_quota_gateway.url, make_tenant())
    first = client.files.create(file=("a.jsonl", io.BytesIO(jsonl())), purpose="fine-tune")
    client.files.create(file=("b.jsonl", io.BytesIO(jsonl())), purpose="fine-tune")
    with pytest.raises(RateLimitError) as full:
        client.files.create(file=("c.jsonl", io.BytesIO(jsonl())), purpose="fine-tune")
    assert full.value.body["code"] == "storage_quota_exceeded"  # type: ignore[index]
    client.files.delete(first.id)  # room again
    client.files.create(file=("c.jsonl", io.BytesIO(jsonl())), purpose="fine-tune")
    other = _client(small_quota_gateway.url, make_tenant())  # each tenant has its own quota
    other.files.create(file=("a.jsonl", io.BytesIO(jsonl())), purpose="fine-tune")
