"""Public identifiers: a short type prefix and random lowercase base-32, like `mif-c7kxdnah6nu5lrpw`."""

from __future__ import annotations

import base64
import secrets


def new_id(prefix: str, length: int = 16) -> str:
    """`prefix` + `length` random characters (5 bits each): base-32 of random bytes, RFC 4648's alphabet in
    lowercase (one call for the whole id; a choice per character cost 2% of the CPU per request)."""
    return prefix + base64.b32encode(secrets.token_bytes((length * 5 + 7) // 8)).decode()[:length].lower()


def tenant_id() -> str:
    return new_id("tnt_")


def key_id() -> str:
    return new_id("key_")


def deployment_id() -> str:
    return new_id("mif-")


def request_id() -> str:
    return new_id("req_", 24)
