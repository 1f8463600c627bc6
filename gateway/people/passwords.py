"""Password policy and argon2id hashing (argon2-cffi). Hashing runs in a worker thread: it is slow on purpose."""

from __future__ import annotations

import asyncio
import functools

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from gateway.people.errors import WeakPassword

MIN_LENGTH = 12
MAX_LENGTH = 1024  # a bound on the work one request can ask for; far beyond any pass phrase

# OWASP's argon2id baseline (19 MiB, 2 passes, 1 lane): about 0.1 s of one core here. argon2-cffi's default
# (64 MiB, 3 passes, 4 lanes) took 1.5-2.4 s on this 2-core machine under load, which a sign-in form cannot
# afford. A hash made with other parameters is upgraded at the next successful sign-in (needs_rehash).
_HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1, hash_len=32, salt_len=16)


def check_policy(password: str) -> None:
    """Raise WeakPassword unless the password is acceptable (its length only, as NIST SP 800-63B advises)."""
    if len(password) < MIN_LENGTH:
        raise WeakPassword(f"The password must have at least {MIN_LENGTH} characters.", param="password")
    if len(password) > MAX_LENGTH:
        raise WeakPassword(f"The password must have at most {MAX_LENGTH} characters.", param="password")


async def hash_password(password: str) -> str:
    """The argon2id PHC string of a password that passed check_policy: `$argon2id$v=19$m=…,t=…,p=…$salt$hash`."""
    return await asyncio.to_thread(_HASHER.hash, password)


async def verify(password_hash: str | None, password: str) -> bool:
    """True if the password matches. With no hash (unknown account) a dummy is checked instead, so the answer
    takes as long either way and does not tell which e-mails exist."""
    if len(password) > MAX_LENGTH:
        return False
    target = password_hash or _dummy_hash()
    try:
        ok = await asyncio.to_thread(_HASHER.verify, target, password)
    except (VerificationError, InvalidHashError):
        return False
    return bool(ok) and password_hash is not None


def needs_rehash(password_hash: str) -> bool:
    return _HASHER.check_needs_rehash(password_hash)


@functools.cache
def _dummy_hash() -> str:
    return _HASHER.hash("not a password of anyone")
