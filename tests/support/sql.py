"""Direct SQL for assertions: the tests read the database themselves, not through the gateway."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg


class Sql:
    def __init__(self, url: str) -> None:
        self.url = url

    def fetch(self, query: str, *args: Any) -> list[dict[str, Any]]:
        async def run() -> list[dict[str, Any]]:
            conn = await asyncpg.connect(self.url)
            try:
                return [dict(r) for r in await conn.fetch(query, *args)]
            finally:
                await conn.close()

        return asyncio.run(run())

    def one(self, query: str, *args: Any) -> dict[str, Any]:
        rows = self.fetch(query, *args)
        assert len(rows) == 1, f"expected one row, got {len(rows)}: {rows}"
        return rows[0]

    def scalar(self, query: str, *args: Any) -> Any:
        return next(iter(self.one(query, *args).values()))
