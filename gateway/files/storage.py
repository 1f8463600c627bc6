"""Blobs on disk addressed by their sha256: identical files share one copy (like the adapter store)."""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

CHUNK = 1 << 20


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._staging = self.root / ".staging"

    def new_staging(self) -> Path:
        """A fresh file path on the same filesystem (so commit is a rename)."""
        self._staging.mkdir(parents=True, exist_ok=True)
        return self._staging / secrets.token_hex(8)

    def spool_dir(self) -> Path:
        """Where an upload's bytes are written while they arrive (this store's disk, not /tmp)."""
        self._staging.mkdir(parents=True, exist_ok=True)
        return self._staging

    def path_of(self, content_hash: str) -> Path:
        return self.root / content_hash[:2] / content_hash

    def write(self, source: BinaryIO, staging: Path, limit: int) -> tuple[str, int]:
        """Copy `source` to `staging` in chunks; (sha256, bytes). More than `limit` bytes: ValueError."""
        digest, size = hashlib.sha256(), 0
        with staging.open("wb") as out:
            while chunk := source.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise ValueError(f"more than {limit} bytes")
                digest.update(chunk)
                out.write(chunk)
        return digest.hexdigest(), size

    def commit(self, staging: Path, content_hash: str) -> Path:
        """Move a staged file to its content address (an identical blob already there wins)."""
        final = self.path_of(content_hash)
        if final.exists():
            staging.unlink(missing_ok=True)
        else:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging, final)
        return final

    def chunks(self, content_hash: str) -> Iterator[bytes]:
        with self.path_of(content_hash).open("rb") as f:
            while chunk := f.read(CHUNK):
                yield chunk

    def remove(self, content_hash: str) -> None:
        """Delete a blob (only call when no live file row points at it)."""
        self.path_of(content_hash).unlink(missing_ok=True)
