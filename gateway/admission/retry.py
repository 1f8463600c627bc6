"""Retry with exponential backoff: one helper for every loop that waits for the database to come back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


class Backoff:
    """Delays that double from `first_s` up to `cap_s`; `reset()` after a success. The sleep and the clock are
    passed in so that tests run on a fake clock."""

    __slots__ = ("cap_s", "clock", "first_s", "next_s", "sleep")

    def __init__(
        self, first_s: float = 0.1, cap_s: float = 2.0, *, sleep: Sleep = asyncio.sleep, clock: Clock = time.monotonic
    ) -> None:
        self.first_s = first_s
        self.cap_s = cap_s
        self.sleep = sleep
        self.clock = clock
        self.next_s = first_s

    def reset(self) -> None:
        self.next_s = self.first_s

    async def wait(self) -> None:
        """Sleep the next delay, and double the one after."""
        delay = self.next_s
        self.next_s = min(delay * 2, self.cap_s)
        await self.sleep(delay)


async def retry(
    attempt: Callable[[], Awaitable[T]],
    *,
    transient: Callable[[Exception], bool],
    for_s: float,
    backoff: Backoff,
    on_retry: Callable[[Exception, float], None] | None = None,
) -> T:
    """`attempt()` until it succeeds; again after a backoff delay while it fails with a `transient` error, until
    the next try would start more than `for_s` after the first. The last error is raised; so is any error that
    is not transient, at once. `on_retry(error, delay)` is told of each retry (to log it)."""
    backoff.reset()
    deadline = backoff.clock() + for_s
    while True:
        try:
            return await attempt()
        except Exception as exc:
            if not transient(exc) or backoff.clock() + backoff.next_s > deadline:
                raise
            if on_retry is not None:
                on_retry(exc, backoff.next_s)
            await backoff.wait()
