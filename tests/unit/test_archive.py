"""Unpacking uploads safely (pure file handling; the integration tests cover the HTTP side)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from gateway.adapters.archive import stage_files
from gateway.errors import InvalidRequest, PayloadTooLarge
from tests.support.adapters import (
    CONFIG,
    WEIGHTS,
    lora_config,
    lora_tensors,
    safetensors,
    tar_gz,
    tar_with_link,
    zip_bytes,
    zip_with_symlink,
)

GOOD = {CONFIG: lora_config(), WEIGHTS: safetensors(lora_tensors(8))}


def stage(tmp_path: Path, files: dict[str, bytes], limit: int = 10**7) -> Path:
    staging = tmp_path / "staging"
    stage_files({name: io.BytesIO(data) for name, data in files.items()}, staging, limit)
    return staging


@pytest.mark.parametrize(
    "upload",
    [{"a.tar.gz": tar_gz(GOOD)}, {"a.tgz": tar_gz(GOOD, prefix="folder/")}, {"a.zip": zip_bytes(GOOD)}, GOOD,
     {**GOOD, "README.md": b"peft's card"}],
)  # fmt: skip
def test_good_uploads_stage_exactly_the_two_files(tmp_path: Path, upload: dict[str, bytes]) -> None:
    staging = stage(tmp_path, upload)
    assert sorted(p.name for p in staging.iterdir()) == [CONFIG, WEIGHTS]
    assert (staging / WEIGHTS).read_bytes() == GOOD[WEIGHTS]


@pytest.mark.parametrize(
    ("upload", "word"),
    [
        ({"a.tar.gz": tar_gz(GOOD, prefix="../")}, "unsafe path"),
        ({"a.tar.gz": tar_with_link(GOOD, "x", "/etc/passwd")}, "Links"),
        ({"a.zip": zip_with_symlink(GOOD, "x", "/etc/passwd")}, "Links"),
        ({"a.zip": zip_bytes({**GOOD, "evil.py": b""})}, "Unexpected files"),
        ({"a.tar.gz": tar_gz({f"f{i}": b"" for i in range(20)})}, "entries"),
        ({"a.tar.gz": b"garbage"}, "could not be read"),
        ({"a.zip": b"garbage"}, "could not be read"),
    ],
)
def test_unsafe_uploads_are_refused(tmp_path: Path, upload: dict[str, bytes], word: str) -> None:
    with pytest.raises(InvalidRequest, match=word):
        stage(tmp_path, upload)


def test_unpacked_size_is_bounded(tmp_path: Path) -> None:
    bomb = {"a.tar.gz": tar_gz({CONFIG: lora_config(), WEIGHTS: b"\0" * 500_000})}
    with pytest.raises(PayloadTooLarge):
        stage(tmp_path, bomb, limit=100_000)
