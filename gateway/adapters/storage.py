"""Adapters on disk, addressed by content hash: identical uploads share one folder."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from gateway.adapters.archive import CONFIG, WEIGHTS, discard
from gateway.content_store import ContentStore

_CHUNK = 1 << 20


class AdapterStore(ContentStore):
    """Adapter folders (adapter_config.json + adapter_model.safetensors), unpacked and validated in staging."""

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
        final = self.path_of(content_hash)
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
