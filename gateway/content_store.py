"""The shape both on-disk stores share (adapters, files): entries addressed by their sha256 under a root, and a
staging area on the same filesystem, so that committing an entry is a rename."""

from __future__ import annotations

import secrets
from pathlib import Path


class ContentStore:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._staging = self.root / ".staging"

    def new_staging(self) -> Path:
        """A fresh path in the staging area (not created)."""
        self._staging.mkdir(parents=True, exist_ok=True)
        return self._staging / secrets.token_hex(8)

    def spool_dir(self) -> Path:
        """Where an upload's bytes are written while they arrive (this store's disk, not /tmp)."""
        self._staging.mkdir(parents=True, exist_ok=True)
        return self._staging

    def path_of(self, content_hash: str) -> Path:
        return self.root / content_hash[:2] / content_hash
