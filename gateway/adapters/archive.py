"""Unpack an uploaded adapter into a staging folder, refusing anything unsafe. Pure file handling, no HTTP.

Archives (.tar.gz/.tgz/.zip) may hold the files at the top or inside one folder. Rejected: absolute paths,
`..`, links, devices, FIFOs, more than a few members, and anything that unpacks beyond the size limit.
"""

from __future__ import annotations

import shutil
import stat
import tarfile
import zipfile
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


class Unsafe(InvalidRequest):
    code = "invalid_adapter"


def _copy_limited(src: IO[bytes], dst: Path, budget: list[int]) -> None:
    with dst.open("wb") as out:
        while chunk := src.read(_CHUNK):
            budget[0] -= len(chunk)
            if budget[0] < 0:
                raise PayloadTooLarge("The adapter unpacks to more than the allowed size.", param="file")
            out.write(chunk)


def unpack_tar(src: BinaryIO, staging: Path, max_unpacked: int) -> None:
    budget = [max_unpacked]
    try:
        with tarfile.open(fileobj=src, mode="r:*") as tar:
            members = tar.getmembers()
            files = [m for m in members if not m.isdir()]
            if len(members) > MAX_MEMBERS:
                raise Unsafe(f"The archive has {len(members)} entries; an adapter needs two files.")
            bad = [m.name for m in files if not m.isreg()]
            if bad:
                raise InvalidRequest(
                    f"Links, devices and other special files are not allowed in archives: {bad}.",
                    code="unsafe_archive",
                    param="file",
                )
            names = [_member_name(m.name) for m in files]
            check_names(names)
            if sum(m.size for m in files) > max_unpacked:
                raise PayloadTooLarge("The adapter unpacks to more than the allowed size.", param="file")
            for member, name in zip(files, names, strict=True):
                if name in IGNORED:
                    continue
                handle = tar.extractfile(member)
                assert handle is not None  # regular file
                _copy_limited(handle, staging / name, budget)
    except (tarfile.TarError, EOFError, OSError) as exc:
        if isinstance(exc, InvalidRequest):
            raise
        raise InvalidRequest(f"The archive could not be read: {exc}", code="invalid_archive", param="file") from exc


def unpack_zip(src: BinaryIO, staging: Path, max_unpacked: int) -> None:
    budget = [max_unpacked]
    try:
        with zipfile.ZipFile(src) as zf:
            infos = [i for i in zf.infolist() if not i.is_dir()]
            if len(zf.infolist()) > MAX_MEMBERS:
                raise Unsafe(f"The archive has {len(zf.infolist())} entries; an adapter needs two files.")
            for info in infos:
                kind = stat.S_IFMT(info.external_attr >> 16)
                if kind and kind != stat.S_IFREG:  # zips from many tools leave the type bits 0
                    raise InvalidRequest(
                        f"Links and special files are not allowed in archives: {info.filename!r}.",
                        code="unsafe_archive",
                        param="file",
                    )
            names = [_member_name(i.filename) for i in infos]
            check_names(names)
            if sum(i.file_size for i in infos) > max_unpacked:
                raise PayloadTooLarge("The adapter unpacks to more than the allowed size.", param="file")
            for info, name in zip(infos, names, strict=True):
                if name in IGNORED:
                    continue
                with zf.open(info) as handle:  # declared sizes can lie: the copy counts real bytes
                    _copy_limited(handle, staging / name, budget)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError) as exc:
        raise InvalidRequest(f"The archive could not be read: {exc}", code="invalid_archive", param="file") from exc


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
