"""How long a step took, and why: a slow group commit is either the database, this process's own work, or a
machine too busy to give this process a CPU. The log line of a slow commit says which."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

Observer = Callable[[float, int], None]  # (seconds, items) of a finished group commit, e.g. into a histogram
SLOW_S = 1.0  # a group commit slower than this is logged: every caller of the batch waited that long


def ignore(seconds: float, items: int) -> None:
    """An Observer that keeps nothing."""


_SCHEDSTAT = "/proc/thread-self/schedstat"  # Linux: ns on a CPU, ns runnable but waiting for one, slices
_opened = threading.local()  # per thread: its schedstat file, kept open (a read is then ~1 µs, not ~14)


def _waited_for_cpu() -> float:
    """Seconds the calling thread (the event loop's) has spent runnable but not running; 0 if unknown."""
    fd = getattr(_opened, "fd", None)
    if fd is None:
        try:
            fd = os.open(_SCHEDSTAT, os.O_RDONLY)
        except OSError:  # not Linux: not known, and not tried again
            fd = -1
        _opened.fd = fd
    try:
        return int(os.pread(fd, 128, 0).split()[1]) / 1e9 if fd >= 0 else 0.0
    except (OSError, IndexError, ValueError):
        return 0.0


class Stopwatch:
    """Started on creation. Cheap to start: read only when a step turns out slow."""

    __slots__ = ("_cpu", "_started", "_waited")

    def __init__(self) -> None:
        self._started = time.monotonic()
        self._cpu = time.process_time()
        self._waited = _waited_for_cpu()

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def describe(self) -> str:
        """e.g. '3.1s (0.4s of this process's CPU, 2.5s waiting for a CPU)'."""
        cpu = time.process_time() - self._cpu
        waited = _waited_for_cpu() - self._waited
        return f"{self.elapsed():.1f}s ({cpu:.1f}s of this process's CPU, {waited:.1f}s waiting for a CPU)"

    def finished(
        self, observe: Observer, items: int, log: logging.Logger, what: str, *args: Any, slow_s: float = SLOW_S
    ) -> None:
        """The step is done: its time goes to `observe`, and to `log` with the reason when slower than `slow_s`
        (`what % args` names the step, e.g. "admission of %d requests")."""
        seconds = self.elapsed()
        observe(seconds, items)
        if seconds > slow_s:
            log.warning(what + " took %s", *args, self.describe())
