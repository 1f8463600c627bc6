"""Routing policy of the engine pool: affinity, spreading, bounded-load spill, failover (pure, no engine)."""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from dataclasses import dataclass

import pytest

from gateway.engine.routing import home, load_bound, pick_for_adapter, pick_least_loaded, rendezvous_order, weight

ENGINES = [f"http://10.0.0.{i}:8000" for i in range(1, 5)]
ADAPTERS = [f"mif-{i:05d}" for i in range(4000)]


@dataclass
class Node:
    url: str
    in_flight: int = 0


def nodes(*loads: int) -> list[Node]:
    return [Node(url, load) for url, load in zip(ENGINES, loads, strict=False)]


def test_weight_is_stable_across_processes() -> None:
    # A fixed value: hash() would change with PYTHONHASHSEED, and gateway processes must agree.
    assert weight("mif-00001", "http://10.0.0.1:8000") == weight("mif-00001", "http://10.0.0.1:8000")
    assert weight("mif-00001", "http://10.0.0.1:8000") != weight("mif-00001", "http://10.0.0.2:8000")
    assert weight("a", "b") == int.from_bytes(hashlib.blake2b(b"b\x00a", digest_size=8).digest(), "big")


def test_adapters_spread_evenly_over_idle_engines() -> None:
    pool = nodes(0, 0, 0, 0)
    share = Counter(pick_for_adapter(a, pool).url for a in ADAPTERS)
    assert set(share) == set(ENGINES)
    for count in share.values():
        assert abs(count - len(ADAPTERS) / 4) < len(ADAPTERS) * 0.05, share


def test_same_adapter_same_engine_whatever_the_order_of_the_list() -> None:
    pool = nodes(0, 0, 0, 0)
    shuffled = list(reversed(pool))
    for a in ADAPTERS[:200]:
        preferred = home(a, pool)
        assert preferred is not None
        assert pick_for_adapter(a, pool).url == pick_for_adapter(a, shuffled).url == preferred.url


def test_losing_an_engine_moves_only_its_own_adapters() -> None:
    pool = nodes(0, 0, 0, 0)
    before = {a: pick_for_adapter(a, pool).url for a in ADAPTERS}
    survivors = [n for n in pool if n.url != ENGINES[1]]
    after = {a: pick_for_adapter(a, survivors).url for a in ADAPTERS}
    moved = {a for a in ADAPTERS if before[a] != after[a]}
    assert moved == {a for a in ADAPTERS if before[a] == ENGINES[1]}
    # ...and they go to their second choice, spread over all survivors
    assert all(after[a] == rendezvous_order(a, pool)[1].url for a in moved)
    assert set(Counter(after[a] for a in moved)) == {n.url for n in survivors}


def test_an_engine_that_comes_back_gets_exactly_its_adapters_back() -> None:
    pool = nodes(0, 0, 0, 0)
    before = {a: pick_for_adapter(a, pool).url for a in ADAPTERS}
    survivors = [n for n in pool if n.url != ENGINES[2]]
    for a in ADAPTERS:
        pick_for_adapter(a, survivors)
    assert {a: pick_for_adapter(a, pool).url for a in ADAPTERS} == before


def test_light_load_never_spills() -> None:
    a = ADAPTERS[0]
    preferred = rendezvous_order(a, nodes(0, 0))[0]
    for load in range(8):  # below the floor the preferred engine keeps its adapter, however uneven the load
        pool = nodes(0, 0)
        next(n for n in pool if n.url == preferred.url).in_flight = load
        assert pick_for_adapter(a, pool, factor=1.25, floor=8).url == preferred.url


def test_a_hot_adapter_spills_to_its_next_engine_in_order() -> None:
    a = ADAPTERS[0]
    pool = nodes(0, 0, 0, 0)
    order = [n.url for n in rendezvous_order(a, pool)]
    by_url = {n.url: n for n in pool}
    by_url[order[0]].in_flight = 20  # above ceil(1.25 × 21 / 4) = 7 and above the floor
    assert pick_for_adapter(a, pool, factor=1.25, floor=4).url == order[1]
    by_url[order[1]].in_flight = 20
    assert pick_for_adapter(a, pool, factor=1.25, floor=4).url == order[2]


def test_placing_a_burst_of_one_adapter_keeps_every_engine_within_the_bound() -> None:
    a = ADAPTERS[7]
    pool = nodes(0, 0, 0)
    for _ in range(300):
        pick_for_adapter(a, pool, factor=1.25, floor=2).in_flight += 1
    total = sum(n.in_flight for n in pool)
    assert total == 300
    assert max(n.in_flight for n in pool) <= load_bound(total - 1, len(pool), 1.25, 2)
    assert rendezvous_order(a, pool)[0].in_flight == max(n.in_flight for n in pool)  # the preferred one is fullest


def test_load_bound() -> None:
    assert load_bound(0, 2, 1.25, 8) == 8  # the floor
    assert load_bound(99, 4, 1.25, 8) == 32  # ceil(1.25 × 100 / 4) = 31.25 → 32
    assert load_bound(99, 4, 1.0, 1) == 25


def test_some_engine_is_always_under_the_bound() -> None:
    rng = random.Random(1)
    for _ in range(500):
        pool = nodes(*(rng.randrange(0, 50) for _ in ENGINES))
        total = sum(n.in_flight for n in pool)
        chosen = pick_for_adapter(rng.choice(ADAPTERS), pool, factor=1.0, floor=1)
        assert chosen.in_flight < load_bound(total, len(pool), 1.0, 1)


def test_base_model_goes_to_the_least_loaded_engine() -> None:
    assert pick_least_loaded(nodes(3, 1, 2, 5)).url == ENGINES[1]
    rng = random.Random(0)
    share = Counter(pick_least_loaded(nodes(0, 0, 4, 4), rng).url for _ in range(400))
    assert set(share) == {ENGINES[0], ENGINES[1]}  # idle engines share the work
    assert min(share.values()) > 150


def test_no_engine_is_an_error_for_the_caller_to_map() -> None:
    with pytest.raises(ValueError):
        pick_for_adapter("x", [])
    with pytest.raises(ValueError):
        pick_least_loaded([])
    assert home("x", []) is None
