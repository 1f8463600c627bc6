"""The slow-commit stopwatch tells time spent on a CPU from time spent waiting (for I/O, or for a CPU)."""

from __future__ import annotations

import re
import time

from gateway.usage.stopwatch import Stopwatch

_LINE = r"(\d+\.\d)s \((\d+\.\d)s of this process's CPU, (\d+\.\d)s waiting for a CPU\)"


def test_a_sleep_takes_time_but_no_cpu() -> None:
    watch = Stopwatch()
    time.sleep(0.3)
    found = re.fullmatch(_LINE, watch.describe())
    assert found, watch.describe()
    took, cpu, _ = (float(x) for x in found.groups())
    assert watch.elapsed() >= 0.3 and took >= 0.3
    assert cpu < 0.2  # sleeping costs no CPU, however busy the machine
