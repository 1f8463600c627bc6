"""Gateway processes announce themselves with a heartbeat; the open requests of a silent one are settled.

A process that dies without a goodbye (kill -9) leaves open request rows (gateway/admission/open_requests.py).
Each process's row says until when it promises another heartbeat (its own timeout, so processes with
different settings judge each other right). Every live process sweeps now and then: rows whose process
missed that promise, and its own rows
that it no longer serves (a discard lost to a database outage), become usage rows billed with their last
checkpoint (status `gateway_lost`), in one transaction with their deletion, so they are settled exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from datetime import timedelta
from typing import Any

import asyncpg

from gateway import ids
from gateway.admission import sql
from gateway.admission.open_requests import OpenRequests
from gateway.db import is_unavailable
from gateway.timeutil import utcnow
from gateway.usage.models import UsageRow, UsageStatus, usage_row
from gateway.usage.writer import UsageWriter

log = logging.getLogger(__name__)


def new_instance_id() -> str:
    return ids.new_id("gw_", 16)


class Instance:
    """This process in the gateway_instances table."""

    def __init__(self, pool: asyncpg.Pool, open_requests: OpenRequests, writer: UsageWriter, timeout_s: float) -> None:
        self._pool = pool
        self._open = open_requests
        self._writer = writer
        self.timeout_s = timeout_s
        self.id = open_requests.instance_id

    async def register(self) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(sql.REGISTER, self.id, socket.gethostname()[:200], os.getpid(), self.timeout_s)

    async def goodbye(self) -> None:
        """Graceful exit: our open rows are all settled by now; leftovers are settled by the others at once."""
        async with self._pool.acquire() as conn:
            await conn.execute(sql.GOODBYE, self.id)

    async def sweep(self) -> int:
        """Settle orphaned open requests; the number settled."""
        before = utcnow() - timedelta(seconds=self.timeout_s)
        async with self._pool.acquire() as conn, conn.transaction():
            orphans = await conn.fetch(sql.ORPHANS, self.id, list(self._open.live), before)
            if orphans:
                await self._writer.insert_usage(conn, [_lost(o) for o in orphans])
            await conn.execute(sql.FORGET)
        if orphans:
            log.warning("settled %d open requests of gateway processes that died", len(orphans))
        return len(orphans)

    async def run(self) -> None:
        """Heartbeat every timeout/5 and sweep every timeout/2, until cancelled."""
        beat = self.timeout_s / 5
        ticks = 0
        while True:
            await asyncio.sleep(beat)
            ticks += 1
            try:
                await self.register()
                if ticks % 2 == 0:
                    await self.sweep()
            except Exception as exc:
                # Never stop beating: a process whose heartbeat task died would be taken for dead by the others
                # while it still serves, and its open requests settled from their checkpoints under its feet.
                if is_unavailable(exc):
                    log.info("database unavailable; heartbeat and sweep retried in %.0fs", beat)
                else:
                    log.exception("heartbeat or sweep failed; retried in %.0fs", beat)


def _lost(o: Any) -> UsageRow:
    now = utcnow()
    return usage_row(
        request_id=o["request_id"],
        tenant_id=o["tenant_id"],
        api_key_id=o["api_key_id"],
        model=o["model"],
        base_model=o["base_model"],
        adapter_id=o["adapter_id"],
        endpoint=o["endpoint"],
        stream=o["stream"],
        prompt_tokens=o["prompt_tokens"],
        completion_tokens=o["completion_tokens"],
        status=UsageStatus.GATEWAY_LOST,
        http_status=200,
        started_at=o["started_at"],
        finished_at=now,
    )
