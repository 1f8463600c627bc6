"""Every bad upload is refused with an actionable 4xx and leaves no files and no rows behind."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ARTIFACTS, TenantHandle
from tests.support.adapters import (
    CONFIG,
    WEIGHTS,
    lora_config,
    lora_tensors,
    raw_safetensors,
    read_adapter,
    safetensors,
    tar_gz,
    tar_with_link,
    zip_bytes,
    zip_encrypted,
    zip_with_symlink,
)
from tests.support.processes import GatewayProcess
from tests.support.sql import Sql


def good(rank: int = 8) -> dict[str, bytes]:
    return {CONFIG: lora_config(rank), WEIGHTS: safetensors(lora_tensors(rank))}


def _cases(real: dict[str, bytes]) -> list[tuple[str, dict[str, bytes], int, str]]:
    """(case, files to upload, status, a word the message must contain)"""
    wrong_shape = lora_tensors(8)
    wrong_shape["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"] = ("F32", [8, 64])
    extra_layer = lora_tensors(8, layers=3)
    odd_tensor = {**lora_tensors(8), "lm_head.weight": ("F32", [1024, 128])}
    w = real[WEIGHTS]
    lora_a = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    short_offsets = {lora_a: {"dtype": "F32", "shape": [8, 128], "data_offsets": [0]}}
    text_offsets = {lora_a: {"dtype": "F32", "shape": [8, 128], "data_offsets": ["0", "4096"]}}
    return [
        ("pickle weights", {CONFIG: real[CONFIG], "adapter_model.bin": b"\x80\x04pickle"}, 400, "safetensors"),
        ("stray file", {**real, "run.sh": b"#!/bin/sh"}, 400, "Unexpected files"),
        ("missing weights", {CONFIG: real[CONFIG]}, 400, "Missing"),
        ("traversal", {"a.tar.gz": tar_gz(real, prefix="../../")}, 400, "unsafe path"),
        ("absolute path", {"a.tar.gz": tar_gz(real, prefix="/tmp/")}, 400, "unsafe path"),
        ("symlink", {"a.tar.gz": tar_with_link(real, "link", "/etc/passwd")}, 400, "Links"),
        ("zip traversal", {"a.zip": zip_bytes(real, prefix="../")}, 400, "unsafe path"),
        ("zip stray", {"a.zip": zip_bytes({**real, "x.py": b"print()"})}, 400, "Unexpected files"),
        ("zip symlink", {"a.zip": zip_with_symlink(real, "link", "/etc/passwd")}, 400, "Links"),
        ("not an archive", {"a.tar.gz": b"this is not gzip"}, 400, "could not be read"),
        ("config not json", {CONFIG: b"{nope", WEIGHTS: real[WEIGHTS]}, 422, "not valid JSON"),
        ("not lora", {CONFIG: lora_config(peft_type="PREFIX_TUNING"), WEIGHTS: real[WEIGHTS]}, 422, "LoRA"),
        ("rank too high", {CONFIG: lora_config(16), WEIGHTS: safetensors(lora_tensors(16))}, 422, "maximum of 8"),
        ("other base", {CONFIG: lora_config(base_model_name_or_path="Qwen/Qwen2.5-7B"), WEIGHTS: w}, 422, "trained on"),
        ("unknown module", {CONFIG: lora_config(target_modules=["c_attn"]), WEIGHTS: w}, 422, "do not exist"),
        ("dora", {CONFIG: lora_config(use_dora=True), WEIGHTS: real[WEIGHTS]}, 422, "DoRA"),
        ("wrong shape", {CONFIG: lora_config(), WEIGHTS: safetensors(wrong_shape)}, 422, "shape"),
        ("too many layers", {CONFIG: lora_config(), WEIGHTS: safetensors(extra_layer)}, 422, "layer 2"),
        ("non-lora tensor", {CONFIG: lora_config(), WEIGHTS: safetensors(odd_tensor)}, 422, "lm_head"),
        ("bad safetensors", {CONFIG: lora_config(), WEIGHTS: b"\xff" * 64}, 422, "safetensors"),
        # these answered 500 (found by a security review)
        ("alpha not a number", {CONFIG: lora_config(lora_alpha="sixteen"), WEIGHTS: w}, 422, "lora_alpha"),
        ("unhashable modules", {CONFIG: lora_config(target_modules=[["q_proj"]]), WEIGHTS: w}, 422, "target_modules"),
        ("offsets too short", {CONFIG: lora_config(), WEIGHTS: raw_safetensors(short_offsets)}, 422, "data_offsets"),
        ("offsets not numbers", {CONFIG: lora_config(), WEIGHTS: raw_safetensors(text_offsets)}, 422, "data_offsets"),
        ("encrypted zip", {"a.zip": zip_encrypted(real)}, 422, "encrypted"),
    ]  # fmt: skip


def stored_files(data_dir: Path) -> set[str]:
    root = data_dir / "adapters"
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} if root.exists() else set()


@pytest.fixture(scope="module")
def tenant(make_tenant: Any) -> TenantHandle:
    return make_tenant()


@pytest.fixture
def unchanged(sql: Sql, data_dir: Path) -> Iterator[None]:
    before = (sql.scalar("SELECT count(*) FROM adapters"), stored_files(data_dir))
    yield
    assert (sql.scalar("SELECT count(*) FROM adapters"), stored_files(data_dir)) == before


def post(url: str, tenant: TenantHandle, files: dict[str, bytes], **form: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/adapters",
        headers=tenant.headers,
        data={"name": form.pop("name", "bad-one"), **form},
        files={n: (n, d) for n, d in files.items()},
        timeout=60,
    )


def test_the_crafted_good_adapter_is_accepted(gateway: Any, tenant: TenantHandle) -> None:
    """The fixtures below differ from this upload in one respect each."""
    r = post(gateway.url, tenant, good(), name="crafted-good")
    assert r.status_code == 201 and r.json()["status"] == "ready", r.text


@pytest.mark.parametrize("index", range(25))
def test_bad_upload_is_rejected(
    gateway: Any, tenant: TenantHandle, models_dir: Path, unchanged: None, index: int
) -> None:
    case, files, status, word = _cases(read_adapter(models_dir / "adapters" / "lora-1"))[index]
    r = post(gateway.url, tenant, files)
    assert r.status_code == status, (case, r.text)
    err = r.json()["error"]
    assert word in err["message"], (case, err)
    assert set(err) == {"message", "type", "code", "param"}


def test_form_problems(gateway: Any, tenant: TenantHandle, models_dir: Path, unchanged: None) -> None:
    real = read_adapter(models_dir / "adapters" / "lora-1")
    assert post(gateway.url, tenant, real, name="").status_code == 400
    assert post(gateway.url, tenant, real, name="../etc").status_code == 400
    assert post(gateway.url, tenant, real, name="ok", base_model="gpt-4").status_code == 400
    assert post(gateway.url, tenant, {}, name="nothing").status_code == 400
    r = httpx.post(f"{gateway.url}/v1/adapters", headers=tenant.headers, json={"name": "x"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_content_type"
    assert httpx.post(f"{gateway.url}/v1/adapters", files={CONFIG: (CONFIG, b"{}")}).status_code == 401


def test_duplicate_name_is_409(gateway: Any, tenant: TenantHandle, models_dir: Path, sql: Sql) -> None:
    real = read_adapter(models_dir / "adapters" / "lora-2")
    assert post(gateway.url, tenant, real, name="twice").status_code == 201
    before = sql.scalar("SELECT count(*) FROM adapters")
    r = post(gateway.url, tenant, real, name="twice")
    assert r.status_code == 409 and r.json()["error"]["param"] == "name"
    assert sql.scalar("SELECT count(*) FROM adapters") == before


def test_a_base_model_name_is_409(
    gateway: Any, admin: httpx.Client, tenant: TenantHandle, models_dir: Path, unchanged: None
) -> None:
    """An adapter named like the base model could only be reached by its deployment id: refused, both ways in."""
    r = post(gateway.url, tenant, read_adapter(models_dir / "adapters" / "lora-1"), name="tiny-base")
    assert r.status_code == 409 and r.json()["error"]["param"] == "name", r.text
    assert "base model" in r.json()["error"]["message"]
    path = str(models_dir / "adapters" / "lora-1")
    r = admin.post(f"/admin/tenants/{tenant.id}/adapters", json={"name": "tiny-base", "path": path})
    assert r.status_code == 409 and r.json()["error"]["param"] == "name", r.text


@pytest.fixture(scope="module")
def small_gateway(gateway_env: dict[str, str]) -> Iterator[GatewayProcess]:
    """A second gateway process on the same database and engine, with tight upload limits."""
    gw = GatewayProcess(
        {**gateway_env, "ADAPTER_MAX_UPLOAD_BYTES": "200000", "ADAPTER_MAX_UNPACKED_BYTES": "150000"},
        ARTIFACTS / "gateway-small.log",
    )
    gw.start()
    yield gw
    gw.stop()


def test_size_limits_are_413(small_gateway: GatewayProcess, tenant: TenantHandle, unchanged: None) -> None:
    big = {CONFIG: lora_config(), WEIGHTS: safetensors(lora_tensors(8)) + b"\0" * 300_000}
    r = post(small_gateway.url, tenant, big)
    assert r.status_code == 413, r.text
    # small on the wire, large once unpacked
    bomb = {"a.tar.gz": tar_gz({CONFIG: lora_config(), WEIGHTS: b"\0" * 400_000})}
    assert len(bomb["a.tar.gz"]) < 200_000
    r = post(small_gateway.url, tenant, bomb)
    assert r.status_code == 413, r.text
    assert "unpacks" in r.json()["error"]["message"]


def test_case_table_is_complete() -> None:
    assert len(_cases(good())) == 25
    assert json.loads(lora_config())["r"] == 8
