"""Adapters on disk, addressed by content hash: identical uploads share one folder."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from gateway.adapters.archive import CONFIG, WEIGHTS, discard

_CHUNK = 1 << 20


class AdapterStore:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._staging = self.root / ".staging"

    def new_staging(self) -> Path:
        """A fresh folder to unpack one upload into (same filesystem, so commit is a rename)."""
        self._staging.mkdir(parents=True, exist_ok=True)
        return self._staging / secrets.token_hex(8)

    def spool_dir(self) -> Path:
        """Where an upload's file parts are written while it arrives (the adapters' disk, not /tmp)."""
        self._staging.mkdir(parents=True, exist_ok=True)
        return self._staging

    def commit(self, staging: Path) -> tuple[Path, str, int]:
        """Move a validated staging folder to its content address; returns (folder, sha256, bytes)."""
        digest = hashlib.sha256()
        size = 0
        for name in (CONFIG, WEIGHTS):
            with (staging / name).open("rb") as f:
                while chunk := f.read(_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
            digest.update(b"\0")
        content_hash = digest.hexdigest()
        final = self.root / content_hash[:2] / content_hash
        if final.exists():
            discard(staging)
        else:
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(staging, final)
            except OSError:  # a concurrent identical upload won the rename
                discard(staging)
        return final, content_hash, size

    def remove(self, path: Path) -> None:
        """Delete a stored adapter folder (only call when no live deployment uses it)."""
        if path.resolve().is_relative_to(self.root):
            discard(path)
