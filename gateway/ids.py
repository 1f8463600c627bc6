"""Public identifiers: a short type prefix and random lowercase base-32, like `mif-c7kxdnah6nu5lrpw`."""

from __future__ import annotations

import secrets

_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"


def new_id(prefix: str, length: int = 16) -> str:
    """`prefix` + `length` random characters (5 bits each)."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def tenant_id() -> str:
    return new_id("tnt_")


def key_id() -> str:
    return new_id("key_")


def deployment_id() -> str:
    return new_id("mif-")


def request_id() -> str:
    return new_id("req_", 24)
