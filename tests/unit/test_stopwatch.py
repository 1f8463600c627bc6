"""The slow-commit stopwatch tells time spent on a CPU from time spent waiting (for I/O, or for a CPU)."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from gateway.admission.stopwatch import Stopwatch

_LINE = r"(\d+\.\d)s \((\d+\.\d)s of this process's CPU, (\d+\.\d)s waiting for a CPU\)"


def test_a_sleep_takes_time_but_no_cpu() -> None:
    watch = Stopwatch()
    time.sleep(0.3)
    found = re.fullmatch(_LINE, watch.describe())
    assert found, watch.describe()
    took, cpu, _ = (float(x) for x in found.groups())
    assert watch.elapsed() >= 0.3 and took >= 0.3
    assert cpu < 0.2  # sleeping costs no CPU, however busy the machine


def test_a_finished_step_is_observed_and_logged_only_when_slow(caplog: Any) -> None:
    seen: list[tuple[float, int]] = []
    log = logging.getLogger("test.stopwatch")
    with caplog.at_level(logging.WARNING, logger="test.stopwatch"):
        Stopwatch().finished(lambda s, n: seen.append((s, n)), 3, log, "commit of %d items", 3, slow_s=60)
        assert caplog.records == []  # fast: observed, not logged
        slow = Stopwatch()
        time.sleep(0.1)
        slow.finished(lambda s, n: seen.append((s, n)), 7, log, "commit of %d items", 7, slow_s=0.05)
    assert [n for _, n in seen] == [3, 7] and seen[1][0] >= 0.1
    assert len(caplog.records) == 1 and re.fullmatch("commit of 7 items took " + _LINE, caplog.records[0].getMessage())
