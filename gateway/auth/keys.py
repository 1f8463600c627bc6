"""API key material: generation, hashing, display prefix. Keys are never stored, only their hash."""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "sk-"
_DISPLAY_LEN = 12


def generate_key() -> str:
    """A new key with 256 bits of randomness."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """SHA-256 hex. Keys are random and long, so a fast hash is safe and keeps lookups cheap."""
    return hashlib.sha256(key.encode()).hexdigest()


def display_prefix(key: str) -> str:
    return key[:_DISPLAY_LEN]


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer …` header ("" if there is none). The scheme is case-insensitive
    (RFC 9110 §11.1): some clients send `bearer`."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""
