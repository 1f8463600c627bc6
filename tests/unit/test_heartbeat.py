"""A gateway process keeps its heartbeat whatever one beat runs into (the others would take it for dead)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from gateway.usage.instances import Instance


async def test_heartbeat_goes_on_after_an_unexpected_error() -> None:
    beats: list[int] = []
    instance = Instance(pool=Any, open_requests=SimpleNamespace(instance_id="gw_test"), writer=Any, timeout_s=0.05)  # type: ignore[arg-type]

    async def register() -> None:
        beats.append(len(beats))
        if len(beats) == 1:
            raise RuntimeError("deadlock detected")  # not "database unavailable": it used to end the task

    async def sweep() -> int:
        return 0

    instance.register = register  # type: ignore[method-assign]
    instance.sweep = sweep  # type: ignore[method-assign]
    task = asyncio.create_task(instance.run())
    try:
        for _ in range(100):
            if len(beats) >= 3:
                break
            await asyncio.sleep(0.01)
        assert len(beats) >= 3 and not task.done()
    finally:
        task.cancel()
