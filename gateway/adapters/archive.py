"""Unpack an uploaded adapter into a staging folder, refusing anything unsafe. Pure file handling, no HTTP.

Archives (.tar.gz/.tgz/.zip) may hold the files at the top or inside one folder. Rejected: absolute paths,
`..`, links, devices, FIFOs, encrypted members, more than a few members, and anything that unpacks beyond the
size limit. Tar headers are read one at a time and a zip's size is read from its end record, so an archive
bomb is refused after a few headers, not after listing or decompressing all of it.
"""

from __future__ import annotations

import gzip
import shutil
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO

from gateway.errors import InvalidRequest, PayloadTooLarge, Unprocessable

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
ALLOWED = {CONFIG, WEIGHTS}
IGNORED = {"README.md"}  # peft's save_pretrained writes one; harmless, not kept
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
MAX_MEMBERS = 16
_CHUNK = 1 << 20


def is_archive(filename: str) -> bool:
    name = filename.lower()
    return name.endswith((".tar.gz", ".tgz", ".zip"))


def _member_name(raw: str) -> str:
    """The file's name inside the adapter (one leading folder allowed), or an InvalidRequest."""
    path = PurePosixPath(raw.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts:
        raise InvalidRequest(f"Archive member {raw!r} has an unsafe path.", code="unsafe_archive", param="file")
    parts = [p for p in path.parts if p not in ("", ".")]
    if len(parts) > 2:
        raise InvalidRequest(
            f"Archive member {raw!r} is nested too deep: put the adapter files at the top of the archive.",
            code="unsafe_archive",
            param="file",
        )
    return parts[-1] if parts else ""


class Unsafe(InvalidRequest):
    code = "invalid_adapter"


def check_names(names: list[str]) -> None:
    """Exactly the adapter files, each once; a clear word for pickled weights and strays."""
    pickles = [n for n in names if n.endswith(PICKLE_SUFFIXES)]
    if pickles:
        raise Unsafe(
            f"Pickled weights are not accepted ({', '.join(pickles)}): save the adapter with "
            "safetensors (peft's save_pretrained(..., safe_serialization=True))."
        )
    strays = sorted(set(names) - ALLOWED - IGNORED)
    if strays:
        raise Unsafe(f"Unexpected files {strays}: an adapter is exactly {CONFIG} and {WEIGHTS}.")
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise Unsafe(f"Files appear more than once: {sorted(dupes)}.")
    missing = sorted(ALLOWED - set(names))
    if missing:
        raise Unsafe(f"Missing {', '.join(missing)}: an adapter is exactly {CONFIG} and {WEIGHTS}.")


def _copy_limited(src: IO[bytes], dst: Path, budget: list[int]) -> None:
    with dst.open("wb") as out:
        while chunk := src.read(_CHUNK):
            budget[0] -= len(chunk)
            if budget[0] < 0:
                raise PayloadTooLarge("The adapter unpacks to more than the allowed size.", param="file")
            out.write(chunk)


class _Entries:
    """Checks archive entries one at a time, as they are read, and copies the adapter's files into staging.

    Refuses at the first entry past the count or the declared-size budget, so a bomb costs a few headers."""

    def __init__(self, staging: Path, max_unpacked: int) -> None:
        self.staging = staging
        self.max_unpacked = max_unpacked
        self.count = 0
        self.declared = 0
        self.budget = [max_unpacked]  # real bytes written, whatever the headers say
        self.names: list[str] = []

    def admit(self, raw_name: str, size: int, *, is_dir: bool, special: bool) -> str | None:
        """The name to extract this entry under, or None to skip it."""
        self.count += 1
        if self.count > MAX_MEMBERS:
            raise Unsafe(f"The archive has more than {MAX_MEMBERS} entries; an adapter needs two files.")
        if is_dir:
            return None
        if special:
            raise InvalidRequest(
                f"Links, devices and other special files are not allowed in archives: {[raw_name]}.",
                code="unsafe_archive",
                param="file",
            )
        name = _member_name(raw_name)
        self.declared += max(size, 0)
        if self.declared > self.max_unpacked:
            raise PayloadTooLarge("The adapter unpacks to more than the allowed size.", param="file")
        first = name not in self.names
        self.names.append(name)
        return name if first and name in ALLOWED else None  # strays and doubles are named by finish()

    def extract(self, src: IO[bytes], name: str) -> None:
        _copy_limited(src, self.staging / name, self.budget)

    def finish(self) -> None:
        check_names(self.names)


def _unreadable(exc: BaseException) -> InvalidRequest:
    return InvalidRequest(f"The archive could not be read: {exc}", code="invalid_archive", param="file")


class _Bounded:
    """A forward-only view of a decompressed tar stream that refuses to decompress past `budget` bytes, and
    any single read bigger than `max_read` (tarfile reads a pax or GNU long-name header whole, at any size)."""

    def __init__(self, inner: BinaryIO | gzip.GzipFile, budget: int, max_read: int) -> None:
        self.inner, self.budget, self.max_read = inner, budget, max_read
        self.pos = 0

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > self.max_read:
            raise Unsafe("The archive holds an oversized header entry.")
        data = self.inner.read(size)
        self.pos += len(data)
        if self.pos > self.budget:
            raise PayloadTooLarge("The adapter unpacks to more than the allowed size.", param="file")
        return data

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        target = offset if whence == 0 else self.pos + offset if whence == 1 else -1
        if target < self.pos:
            raise OSError("the archive stream cannot go backwards")
        while self.pos < target:  # skipping still decompresses: counted like any read
            if not self.read(min(_CHUNK, target - self.pos)):
                break
        return self.pos


_GZIP_MAGIC = b"\x1f\x8b"
_HEADER_SLACK = (MAX_MEMBERS + 1) * (_CHUNK + 4 * tarfile.BLOCKSIZE)  # headers and padding around the data


def unpack_tar(src: BinaryIO, staging: Path, max_unpacked: int) -> None:
    """A .tar.gz (or plain tar) read header by header: nothing is listed up front, nothing decompressed past
    the size budget."""
    entries = _Entries(staging, max_unpacked)
    try:
        gzipped = src.read(2) == _GZIP_MAGIC
        src.seek(0)
        raw: BinaryIO | gzip.GzipFile = gzip.GzipFile(fileobj=src, mode="rb") if gzipped else src
        stream = _Bounded(raw, max_unpacked + _HEADER_SLACK, _CHUNK)
        with tarfile.open(fileobj=stream, mode="r:") as tar:  # type: ignore[call-overload]
            while (info := tar.next()) is not None:
                special = not (info.isreg() or info.isdir())
                name = entries.admit(info.name, info.size, is_dir=info.isdir(), special=special)
                if name is not None:
                    handle = tar.extractfile(info)
                    if handle is None:  # not a regular file: refused above, never reached
                        raise _unreadable(ValueError(info.name))
                    with handle:
                        entries.extract(handle, name)
        entries.finish()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise _unreadable(exc) from exc


_MAX_CENTRAL_DIRECTORY = 64 * 1024  # 16 entries with long names fit many times over


def _check_zip_directory(src: BinaryIO) -> None:
    """Read the zip's end record (only the file's tail) and refuse a central directory too big for an adapter,
    before ZipFile parses all of it."""
    end = zipfile._EndRecData(src)  # type: ignore[attr-defined]  # the very record ZipFile trusts next
    if end is None:
        raise zipfile.BadZipFile("File is not a zip file")
    entries, size = end[zipfile._ECD_ENTRIES_TOTAL], end[zipfile._ECD_SIZE]  # type: ignore[attr-defined]
    if entries > MAX_MEMBERS or size > _MAX_CENTRAL_DIRECTORY:
        raise Unsafe(f"The archive has {entries} entries; an adapter needs two files.")
    src.seek(0)


def unpack_zip(src: BinaryIO, staging: Path, max_unpacked: int) -> None:
    def special(info: zipfile.ZipInfo) -> bool:
        kind = stat.S_IFMT(info.external_attr >> 16)
        return bool(kind) and kind != stat.S_IFREG  # zips from many tools leave the type bits 0

    entries = _Entries(staging, max_unpacked)
    try:
        _check_zip_directory(src)
        with zipfile.ZipFile(src) as zf:
            for info in zf.infolist():
                name = entries.admit(info.filename, info.file_size, is_dir=info.is_dir(), special=special(info))
                if info.flag_bits & 0x1:
                    raise Unprocessable(
                        f"Archive member {info.filename!r} is encrypted: upload an archive without a password.",
                        code="encrypted_archive",
                        param="file",
                    )
                if name is not None:
                    with zf.open(info) as handle:
                        entries.extract(handle, name)
        entries.finish()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError, zlib.error) as exc:
        raise _unreadable(exc) from exc
    except ValueError as exc:  # e.g. a member name that is not valid UTF-8 although flagged so
        raise _unreadable(exc) from exc


def stage_files(files: dict[str, BinaryIO], staging: Path, max_unpacked: int) -> None:
    """Put the uploaded adapter (one archive, or the two files) into `staging` as the two files."""
    staging.mkdir(parents=True)
    if len(files) == 1 and is_archive(next(iter(files))):
        name, handle = next(iter(files.items()))
        (unpack_zip if name.lower().endswith(".zip") else unpack_tar)(handle, staging, max_unpacked)
        return
    names = [PurePosixPath(n.replace("\\", "/")).name for n in files]
    check_names(names)
    budget = [max_unpacked]
    for name, handle in zip(names, files.values(), strict=True):
        if name not in IGNORED:
            _copy_limited(handle, staging / name, budget)


def discard(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
