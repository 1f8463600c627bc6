"""The Uploads API with the official openai SDK: a file in 3 parts, md5, cancel, expiry through the queue."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai import BadRequestError, NotFoundError, OpenAI

from devstack.finetune_data import jsonl
from tests.conftest import ARTIFACTS, TenantHandle
from tests.support.processes import GatewayProcess
from tests.support.sql import Sql
from tests.support.trainer import TrainerProcess


@pytest.fixture(scope="module")
def tenant(make_tenant: Any) -> TenantHandle:
    return make_tenant()


@pytest.fixture(scope="module")
def client(gateway: GatewayProcess, tenant: TenantHandle, trainer: TrainerProcess) -> OpenAI:
    return OpenAI(base_url=f"{gateway.url}/v1", api_key=tenant.key, max_retries=0, timeout=120)


def thirds(data: bytes) -> list[bytes]:
    n = len(data) // 3
    return [data[:n], data[n : 2 * n], data[2 * n :]]


def test_a_training_file_in_three_parts_fine_tunes(client: OpenAI, data_dir: Path) -> None:
    data = jsonl()
    upload = client.uploads.create(bytes=len(data), filename="id.jsonl", mime_type="text/jsonl", purpose="fine-tune")
    assert upload.id.startswith("upload_") and upload.status == "pending" and upload.file is None
    assert upload.expires_at - upload.created_at == 3600
    parts = [client.uploads.parts.create(upload.id, data=chunk) for chunk in thirds(data)]
    retried = client.uploads.parts.create(upload.id, data=thirds(data)[1])  # a part sent again: use the new one
    ids = [parts[0].id, retried.id, parts[2].id]
    done = client.uploads.complete(upload.id, part_ids=ids, md5=hashlib.md5(data).hexdigest())
    assert done.status == "completed" and done.file is not None and done.file.bytes == len(data)
    assert client.files.content(done.file.id).read() == data
    assert not (data_dir / "uploads" / upload.id).exists()  # the parts are gone
    job = client.fine_tuning.jobs.create(model="tiny-base", training_file=done.file.id, hyperparameters={"n_epochs": 1})
    deadline = time.monotonic() + 600
    while (job := client.fine_tuning.jobs.retrieve(job.id)).status not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert job.status == "succeeded", job.error


def test_wrong_md5_wrong_size_and_other_tenants(client: OpenAI, gateway: GatewayProcess, make_tenant: Any) -> None:
    data = jsonl()
    upload = client.uploads.create(bytes=len(data), filename="x.jsonl", mime_type="text/jsonl", purpose="fine-tune")
    parts = [client.uploads.parts.create(upload.id, data=chunk).id for chunk in thirds(data)]
    with pytest.raises(BadRequestError) as bad:
        client.uploads.complete(upload.id, part_ids=parts, md5="0" * 32)
    assert bad.value.body["param"] == "md5"  # type: ignore[index]
    with pytest.raises(BadRequestError) as bad:
        client.uploads.complete(upload.id, part_ids=parts[:2])
    assert "bytes" in bad.value.body["message"]  # type: ignore[index]
    stranger = OpenAI(base_url=f"{gateway.url}/v1", api_key=make_tenant().key, max_retries=0)
    with pytest.raises(NotFoundError):
        stranger.uploads.complete(upload.id, part_ids=parts)
    with pytest.raises(NotFoundError):
        stranger.uploads.parts.create(upload.id, data=b"x")
    assert client.uploads.complete(upload.id, part_ids=parts).status == "completed"  # still completable


def test_cancel_deletes_the_parts(client: OpenAI, data_dir: Path) -> None:
    upload = client.uploads.create(bytes=10, filename="x.jsonl", mime_type="text/jsonl", purpose="fine-tune")
    client.uploads.parts.create(upload.id, data=b"0123456789")
    assert (data_dir / "uploads" / upload.id).exists()
    assert client.uploads.cancel(upload.id).status == "cancelled"
    assert not (data_dir / "uploads" / upload.id).exists()
    with pytest.raises(BadRequestError):
        client.uploads.parts.create(upload.id, data=b"x")


@pytest.fixture(scope="module")
def short_lived_gateway(gateway_env: dict[str, str]) -> Iterator[GatewayProcess]:
    gw = GatewayProcess({**gateway_env, "UPLOADS_EXPIRE_AFTER": "2"}, ARTIFACTS / "gateway-uploads.log")
    gw.start()
    yield gw
    gw.stop()


def test_an_unfinished_upload_expires_through_the_queue(
    short_lived_gateway: GatewayProcess, tenant: TenantHandle, trainer: TrainerProcess, sql: Sql, data_dir: Path
) -> None:
    client = OpenAI(base_url=f"{short_lived_gateway.url}/v1", api_key=tenant.key, max_retries=0)
    upload = client.uploads.create(bytes=10, filename="x.jsonl", mime_type="text/jsonl", purpose="fine-tune")
    client.uploads.parts.create(upload.id, data=b"01234")
    deadline = time.monotonic() + 60
    while sql.scalar("SELECT status FROM uploads WHERE id = $1", upload.id) != "expired":
        assert time.monotonic() < deadline, "the expiry job did not run"
        time.sleep(0.5)
    assert not (data_dir / "uploads" / upload.id).exists()
    with pytest.raises(BadRequestError):
        client.uploads.parts.create(upload.id, data=b"56789")


def test_an_adapter_archive_through_the_uploads_api_deploys_by_file_id(
    client: OpenAI, gateway: GatewayProcess, tenant: TenantHandle, models_dir: Path
) -> None:
    import io
    import tarfile

    import httpx

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            tar.add(models_dir / "adapters" / "lora-2" / name, arcname=name)
    data = buf.getvalue()
    upload = client.uploads.create(
        bytes=len(data),
        filename="lora.tar.gz",
        mime_type="application/gzip",
        purpose="adapter",  # type: ignore[arg-type]
    )
    parts = [client.uploads.parts.create(upload.id, data=chunk).id for chunk in thirds(data)]
    done = client.uploads.complete(upload.id, part_ids=parts, md5=hashlib.md5(data).hexdigest())
    assert done.file is not None and done.file.purpose == "adapter"
    r = httpx.post(
        f"{gateway.url}/v1/adapters", headers=tenant.headers, data={"name": "from-upload", "file_id": done.file.id}
    )
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "ready"
    answer = client.chat.completions.create(
        model="from-upload", messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )
    assert answer.choices
