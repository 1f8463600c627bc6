"""Unpacking uploads safely (pure file handling; the integration tests cover the HTTP side)."""

from __future__ import annotations

import gzip
import io
import tarfile
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from gateway.adapters.archive import MAX_MEMBERS, stage_files, unpack_tar, unpack_zip
from gateway.errors import InvalidRequest, PayloadTooLarge, Unprocessable
from tests.support.adapters import (
    CONFIG,
    WEIGHTS,
    lora_config,
    lora_tensors,
    safetensors,
    tar_gz,
    tar_with_link,
    zip_bytes,
    zip_encrypted,
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


class Counting(io.BytesIO):
    """An upload that counts how many of its (compressed) bytes the unpacker read."""

    consumed = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.consumed += len(data)
        return data


def many_headers(n: int) -> bytes:
    """A tar of n empty files named 0, 1, 2…: a template header with the name and checksum patched (fast)."""
    template = bytearray(tarfile.TarInfo("").tobuf(format=tarfile.USTAR_FORMAT))
    template[148:156] = b" " * 8
    base = sum(template)
    out = bytearray()
    for i in range(n):
        name = b"%d" % i
        block = bytearray(template)
        block[: len(name)] = name
        block[148:156] = b"%06o\0 " % (base + sum(name))
        out += block
    return bytes(out + b"\0" * 1024)


def gzip_of_zeros(mib: int) -> bytes:
    """mib MiB of zeros as concatenated gzip members (about 1 KiB each): built in no time."""
    return gzip.compress(b"\0" * (1 << 20)) * mib


def test_a_tar_of_200000_entries_is_refused_at_the_first_one_too_many(tmp_path: Path) -> None:
    upload = Counting(gzip.compress(many_headers(200_000), compresslevel=1))
    tracemalloc.start()
    try:
        with pytest.raises(InvalidRequest, match=f"more than {MAX_MEMBERS} entries"):
            unpack_tar(upload, tmp_path / "s", 10**7)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # Listing every member first read all 1.4 MB and held ~80 MiB of TarInfo; one header at a time stops at
    # entry 17, within the first read of the compressed file.
    assert upload.consumed <= 64 * 1024 < len(upload.getvalue()) // 10
    assert peak < 4 * 1024 * 1024


def test_a_gigabyte_of_zeros_is_refused_without_decompressing_it(tmp_path: Path) -> None:
    info = tarfile.TarInfo(WEIGHTS)
    info.size = 1 << 30
    bomb = gzip.compress(info.tobuf(format=tarfile.USTAR_FORMAT)) + gzip_of_zeros(1024) + gzip.compress(b"\0" * 1024)
    upload = Counting(bomb)
    with pytest.raises(PayloadTooLarge, match="unpacks"):
        unpack_tar(upload, tmp_path / "s", 10 * 1024 * 1024)
    assert upload.consumed <= 64 * 1024  # the whole 1 MiB upload was decompressed (1 GiB) by the old listing


def test_a_huge_pax_header_is_not_read_into_memory(tmp_path: Path) -> None:
    """tarfile reads a pax header whole: one declaring 64 MiB is refused before it is read."""
    pax = tarfile.TarInfo("././@PaxHeader")
    pax.type = tarfile.XHDTYPE
    pax.size = 64 << 20
    upload = Counting(gzip.compress(pax.tobuf(format=tarfile.USTAR_FORMAT)) + gzip_of_zeros(64))
    with pytest.raises(InvalidRequest, match="oversized header"):
        unpack_tar(upload, tmp_path / "s", 10**9)
    assert upload.consumed <= 64 * 1024


def test_real_bytes_are_counted_whatever_the_archive_declares(tmp_path: Path) -> None:
    """Several members, each under the limit, together over it: refused once the limit is really written."""
    files = {CONFIG: b"{}", WEIGHTS: b"\0" * 60_000, "README.md": b"\0" * 60_000}
    with pytest.raises(PayloadTooLarge):
        stage(tmp_path, {"a.tar.gz": tar_gz(files)}, limit=100_000)


def zip_of_empty_files(n: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(n):
            zf.writestr(str(i), b"")
    return buf.getvalue()


def test_a_zip_with_20000_entries_is_refused_from_its_end_record(tmp_path: Path) -> None:
    upload = Counting(zip_of_empty_files(20_000))
    with pytest.raises(InvalidRequest, match="20000 entries"):
        unpack_zip(upload, tmp_path / "s", 10**7)
    assert upload.consumed < 1024  # the end record only, not the 1 MB central directory


def test_a_zip_that_understates_its_entry_count_is_refused_too(tmp_path: Path) -> None:
    """ZipFile parses the whole central directory whatever the count says: its size is what is bounded."""
    data = bytearray(zip_of_empty_files(20_000))
    end = data.rfind(b"PK\x05\x06")
    data[end + 8 : end + 12] = (2).to_bytes(2, "little") * 2  # entries on this disk, entries in all
    upload = Counting(bytes(data))
    with pytest.raises(InvalidRequest, match="entries"):
        unpack_zip(upload, tmp_path / "s", 10**7)
    assert upload.consumed < 1024


def test_an_encrypted_zip_is_unprocessable(tmp_path: Path) -> None:
    with pytest.raises(Unprocessable, match="encrypted"):
        stage(tmp_path, {"a.zip": zip_encrypted(GOOD)})
