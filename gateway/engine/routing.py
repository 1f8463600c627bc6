"""Which engine takes a request: rendezvous hashing with bounded loads for adapters, least loaded for the base.

Pure functions over anything with a `url` and an `in_flight` count, so every gateway process (and host) that
sees the same healthy engines puts an adapter on the same one without talking to the others.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from typing import Protocol, TypeVar


class Node(Protocol):
    @property
    def url(self) -> str: ...

    @property
    def in_flight(self) -> int: ...


N = TypeVar("N", bound=Node)


def weight(item: str, node_url: str) -> int:
    """The rendezvous weight of `item` on a node: stable across processes (unlike `hash()`)."""
    digest = hashlib.blake2b(f"{node_url}\x00{item}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rendezvous_order(item: str, nodes: Sequence[N]) -> list[N]:
    """The nodes in `item`'s order of preference (highest random weight first)."""
    return sorted(nodes, key=lambda n: (weight(item, n.url), n.url), reverse=True)


def home(item: str, nodes: Sequence[N]) -> N | None:
    """The node `item` prefers when none is loaded."""
    return max(nodes, key=lambda n: (weight(item, n.url), n.url), default=None)


def load_bound(total_in_flight: int, nodes: int, factor: float, floor: int) -> int:
    """How many requests a node may have in flight before the next one spills: ceil(c × average), counting the
    request being placed, but never below `floor` (light load stays where the adapter is warm)."""
    return max(floor, math.ceil(factor * (total_in_flight + 1) / max(nodes, 1)))


def pick_for_adapter(item: str, nodes: Sequence[N], factor: float = 1.25, floor: int = 8) -> N:
    """The first node in `item`'s rendezvous order that is under the load bound.

    With factor ≥ 1 one always is (the least loaded node is at or below the average); the fallback to the least
    loaded node only matters for a factor below 1."""
    if not nodes:
        raise ValueError("no nodes to choose from")
    bound = load_bound(sum(n.in_flight for n in nodes), len(nodes), factor, floor)
    for node in rendezvous_order(item, nodes):
        if node.in_flight < bound:
            return node
    return min(nodes, key=lambda n: n.in_flight)


def pick_least_loaded(nodes: Sequence[N], rng: random.Random | None = None) -> N:
    """The node with the fewest requests in flight; ties broken at random so idle nodes share the work."""
    if not nodes:
        raise ValueError("no nodes to choose from")
    low = min(n.in_flight for n in nodes)
    return (rng or random).choice([n for n in nodes if n.in_flight == low])
