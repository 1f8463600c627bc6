"""Password policy and argon2id hashing (pure: no database)."""

from __future__ import annotations

import pytest

from gateway.people import passwords
from gateway.people.errors import WeakPassword


async def test_hashes_are_argon2id_salted_and_verify() -> None:
    first = await passwords.hash_password("correct horse battery")
    second = await passwords.hash_password("correct horse battery")
    assert first.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert first != second  # a salt of its own each
    assert "correct horse battery" not in first
    assert await passwords.verify(first, "correct horse battery")
    assert not await passwords.verify(first, "correct horse batterY")
    assert not await passwords.verify(None, "correct horse battery")  # unknown account: a dummy is checked
    assert not await passwords.verify("not a hash", "correct horse battery")
    assert not passwords.needs_rehash(first)
    # A hash made with other parameters (argon2-cffi's defaults) still verifies and asks to be upgraded.
    from argon2 import PasswordHasher

    old = PasswordHasher().hash("correct horse battery")
    assert await passwords.verify(old, "correct horse battery") and passwords.needs_rehash(old)


def test_policy_is_a_length_of_12_to_1024() -> None:
    passwords.check_policy("x" * 12)
    passwords.check_policy("x" * 1024)
    for bad in ("", "x" * 11, "x" * 1025):
        with pytest.raises(WeakPassword) as refused:
            passwords.check_policy(bad)
        assert refused.value.status_code == 400 and refused.value.param == "password"
