"""The invalidated TTL cache: served only while the channel is live, never keeps a read that raced a change."""

from __future__ import annotations

import time

import pytest

from gateway.auth.service import Caller, KeyCache
from gateway.cache import Invalidations, TtlCache


def _channel(live: bool = True) -> Invalidations:
    channel = Invalidations("postgresql://unused")
    channel.live = live
    return channel


def test_hit_until_ttl() -> None:
    cache: TtlCache[str] = TtlCache(_channel(), ttl_s=0.05)
    cache.put("k", "v", cache.token())
    assert cache.get("k") == "v"
    time.sleep(0.06)
    assert cache.get("k") is None


def test_nothing_served_or_stored_while_the_channel_is_down() -> None:
    channel = _channel()
    cache: TtlCache[str] = TtlCache(channel, ttl_s=60)
    cache.put("k", "v", cache.token())
    channel.live = False
    assert cache.get("k") is None
    cache.put("k2", "v", cache.token())
    channel.live = True
    assert cache.get("k2") is None


def test_a_read_that_raced_a_notification_is_not_kept() -> None:
    channel = _channel()
    cache: TtlCache[str] = TtlCache(channel, ttl_s=60)
    token = cache.token()  # taken before the database read
    channel._on_notify(None, 0, "gateway_cache", "key:abc")  # a change commits meanwhile
    cache.put("k", "stale", token)
    assert cache.get("k") is None
    cache.put("k", "fresh", cache.token())
    assert cache.get("k") == "fresh"


@pytest.mark.parametrize(
    ("payload", "left"),
    [
        ("key:key_1", {"h2", "h3"}),
        ("tenant:ten_a", {"h3"}),
        ("key:other", {"h1", "h2", "h3"}),
        ("adapter:ten_a", {"h1", "h2", "h3"}),
    ],
)
def test_key_cache_drops_what_the_notification_names(payload: str, left: set[str]) -> None:
    channel = _channel()
    keys = KeyCache(channel, ttl_s=60)
    for h, key_id, tenant in (("h1", "key_1", "ten_a"), ("h2", "key_2", "ten_a"), ("h3", "key_3", "ten_b")):
        keys.entries.put(h, (Caller(key_id, tenant), None), keys.entries.token())
    channel._on_notify(None, 0, "gateway_cache", payload)
    assert {h for h in ("h1", "h2", "h3") if keys.entries.get(h) is not None} == left


def test_losing_the_channel_drops_everything() -> None:
    channel = _channel()
    keys = KeyCache(channel, ttl_s=60)
    keys.entries.put("h1", (Caller("key_1", "ten_a"), None), keys.entries.token())
    channel._down()
    channel.live = True  # reconnected
    assert keys.entries.get("h1") is None
