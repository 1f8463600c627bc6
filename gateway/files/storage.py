"""Blobs on disk addressed by their sha256: identical files share one copy (like the adapter store)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from gateway.content_store import ContentStore

CHUNK = 1 << 20


class BlobStore(ContentStore):
    """Files (fine-tune data, adapter archives) as single blobs."""

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
