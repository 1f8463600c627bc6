"""The one retry-with-backoff helper, on a fake clock: doubling delays, a deadline, transient vs permanent."""

from __future__ import annotations

import pytest

from gateway.admission.retry import Backoff, retry


class FakeClock:
    """Time passes only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class Transient(Exception):
    pass


def backoff(clock: FakeClock, first_s: float = 0.1, cap_s: float = 2.0) -> Backoff:
    return Backoff(first_s, cap_s, sleep=clock.sleep, clock=clock)


async def test_delays_double_up_to_the_cap_and_reset() -> None:
    clock = FakeClock()
    b = backoff(clock, 0.2, 1.0)
    for _ in range(5):
        await b.wait()
    assert clock.slept == [0.2, 0.4, 0.8, 1.0, 1.0]
    b.reset()
    await b.wait()
    assert clock.slept[-1] == 0.2


async def test_a_transient_failure_is_retried_until_it_succeeds() -> None:
    clock = FakeClock()
    calls: list[float] = []
    retried: list[float] = []

    async def attempt() -> str:
        calls.append(clock.now)
        if len(calls) < 4:
            raise Transient
        return "done"

    result = await retry(
        attempt,
        transient=lambda e: isinstance(e, Transient),
        for_s=30,
        backoff=backoff(clock),
        on_retry=lambda exc, delay: retried.append(delay),
    )
    assert result == "done"
    assert clock.slept == retried == [0.1, 0.2, 0.4]
    assert calls == pytest.approx([1000.0, 1000.1, 1000.3, 1000.7])


async def test_a_permanent_failure_is_raised_at_once() -> None:
    clock = FakeClock()
    calls = 0

    async def attempt() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError, match="a bug"):
        await retry(attempt, transient=lambda e: isinstance(e, Transient), for_s=30, backoff=backoff(clock))
    assert calls == 1 and clock.slept == []


async def test_a_failure_that_lasts_gives_up_before_the_deadline_with_the_last_error() -> None:
    clock = FakeClock()
    errors: list[Transient] = []

    async def attempt() -> None:
        errors.append(Transient(len(errors)))
        raise errors[-1]

    with pytest.raises(Transient) as raised:
        await retry(attempt, transient=lambda e: isinstance(e, Transient), for_s=5, backoff=backoff(clock))
    assert raised.value is errors[-1]
    # 0.1 + 0.2 + 0.4 + 0.8 + 1.6 = 3.1 s; the next try (after 2 s more) would start past the 5 s deadline.
    assert clock.slept == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6])
    assert len(errors) == 6


async def test_each_retry_starts_from_the_first_delay() -> None:
    clock = FakeClock()
    b = backoff(clock)
    for _ in range(2):
        failed = False

        async def attempt() -> None:
            nonlocal failed
            if not failed:
                failed = True
                raise Transient

        await retry(attempt, transient=lambda e: isinstance(e, Transient), for_s=30, backoff=b)
    assert clock.slept == [0.1, 0.1]
