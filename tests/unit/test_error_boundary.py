"""The error tree stays plain data; the database's errors are translated in one place."""

from __future__ import annotations

import subprocess
import sys

import asyncpg
import pytest
from sqlalchemy import exc as sa_exc

from gateway.db import db_errors, is_duplicate
from gateway.errors import Conflict, DatabaseUnavailable


def test_errors_module_imports_nothing_of_the_web_or_the_database() -> None:
    probe = (
        "import sys, gateway.errors; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'litestar', 'sqlalchemy', 'asyncpg', 'sqlmodel', "
        "'billing'} | {m for m in sys.modules if m in ('gateway.db', 'gateway.http_errors')}))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _unique_violation() -> sa_exc.IntegrityError:
    """A duplicate key as SQLAlchemy's asyncpg dialect raises it (the driver's error as its cause)."""
    driver = asyncpg.UniqueViolationError("duplicate key value violates unique constraint")
    orig = type("Translated", (Exception,), {"sqlstate": "23505"})("duplicate key")
    wrapped = sa_exc.IntegrityError("INSERT …", None, orig)
    wrapped.__cause__ = driver
    return wrapped


async def test_a_duplicate_key_becomes_the_callers_conflict() -> None:
    taken = Conflict("A tenant named 'x' already exists.", param="name")
    assert is_duplicate(_unique_violation()) and is_duplicate(asyncpg.UniqueViolationError("dup"))
    with pytest.raises(Conflict) as raised:
        async with db_errors(duplicate=taken):
            raise _unique_violation()
    assert raised.value is taken
    with pytest.raises(sa_exc.IntegrityError):  # no name given: not guessed
        async with db_errors():
            raise _unique_violation()
    other = sa_exc.IntegrityError("INSERT …", None, type("T", (Exception,), {"sqlstate": "23503"})("fk"))
    with pytest.raises(sa_exc.IntegrityError):  # a foreign-key violation is not a taken name
        async with db_errors(duplicate=taken):
            raise other


async def test_an_unreachable_database_is_unavailable() -> None:
    with pytest.raises(DatabaseUnavailable):
        async with db_errors(duplicate=Conflict("taken")):
            raise ConnectionRefusedError("refused")
