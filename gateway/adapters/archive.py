"""Unpack an uploaded adapter into a staging folder, refusing anything unsafe. Pure file handling, no HTTP.

Archives (.tar.gz/.tgz/.zip) may hold the files at the top or inside one folder. Rejected: absolute paths,
`..`, links, devices, FIFOs, more than a few members, and anything that unpacks beyond the size limit.
"""

from __future__ import annotations

import shutil
import stat
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO

from gateway.errors import InvalidRequest, PayloadTooLarge

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


@dataclass(frozen=True)
class _Member:
    """One archive entry, whatever the archive format."""

    raw_name: str
    size: int  # as declared; the copy counts real bytes anyway
    special: bool  # a link, device, FIFO…
    open: Callable[[], IO[bytes]]


def _unpack(members: list[_Member], entries: int, staging: Path, max_unpacked: int) -> None:
    if entries > MAX_MEMBERS:
        raise Unsafe(f"The archive has {entries} entries; an adapter needs two files.")
    special = [m.raw_name for m in members if m.special]
    if special:
        raise InvalidRequest(
            f"Links, devices and other special files are not allowed in archives: {special}.",
            code="unsafe_archive",
            param="file",
        )
    names = [_member_name(m.raw_name) for m in members]
    check_names(names)
    if sum(m.size for m in members) > max_unpacked:
        raise PayloadTooLarge("The adapter unpacks to more than the allowed size.", param="file")
    budget = [max_unpacked]
    for member, name in zip(members, names, strict=True):
        if name not in IGNORED:
            with member.open() as handle:
                _copy_limited(handle, staging / name, budget)


def _unreadable(exc: BaseException) -> InvalidRequest:
    return InvalidRequest(f"The archive could not be read: {exc}", code="invalid_archive", param="file")


def unpack_tar(src: BinaryIO, staging: Path, max_unpacked: int) -> None:
    def opener(tar: tarfile.TarFile, info: tarfile.TarInfo) -> Callable[[], IO[bytes]]:
        def open_member() -> IO[bytes]:
            handle = tar.extractfile(info)
            if handle is None:  # not a regular file: refused above, never reached
                raise _unreadable(ValueError(info.name))
            return handle

        return open_member

    try:
        with tarfile.open(fileobj=src, mode="r:*") as tar:
            entries = tar.getmembers()
            members = [_Member(m.name, m.size, not m.isreg(), opener(tar, m)) for m in entries if not m.isdir()]
            _unpack(members, len(entries), staging, max_unpacked)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise _unreadable(exc) from exc


def unpack_zip(src: BinaryIO, staging: Path, max_unpacked: int) -> None:
    def special(info: zipfile.ZipInfo) -> bool:
        kind = stat.S_IFMT(info.external_attr >> 16)
        return bool(kind) and kind != stat.S_IFREG  # zips from many tools leave the type bits 0

    try:
        with zipfile.ZipFile(src) as zf:
            entries = zf.infolist()
            members = [
                _Member(i.filename, i.file_size, special(i), partial(zf.open, i)) for i in entries if not i.is_dir()
            ]
            _unpack(members, len(entries), staging, max_unpacked)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError) as exc:
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
