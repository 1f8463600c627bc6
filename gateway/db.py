"""Database engine and sessions, the metering pool; the one translation of driver errors into the gateway's.

Two ways in, one database: SQLAlchemy (sessions, the ORM tables) for everything but the per-request path, and
a small asyncpg pool for the per-request transactions (admissions, rate limits, usage rows and their charges,
checkpoints, the orphan sweep), which run prepared statements on the driver directly: SQLAlchemy's execute
path, its greenlet hop and the pool's pre-ping cost several times the round trip itself there
(bench/results/gateway_overhead_notes.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.errors import DatabaseUnavailable, GatewayError
from gateway.settings import DatabaseSettings


def metadata() -> type[SQLModel]:
    """SQLModel with every table registered (Alembic and tests import through here)."""
    from gateway.adapters import models as _adapters  # noqa: F401
    from gateway.audit import models as _audit  # noqa: F401
    from gateway.auth import models as _auth  # noqa: F401
    from gateway.files import models as _files  # noqa: F401
    from gateway.fine_tuning import models as _fine_tuning  # noqa: F401
    from gateway.limits import models as _limits  # noqa: F401
    from gateway.people import models as _people  # noqa: F401
    from gateway.uploads import models as _uploads  # noqa: F401
    from gateway.usage import models as _usage  # noqa: F401

    return SQLModel


def create_engine(settings: DatabaseSettings) -> AsyncEngine:
    return create_async_engine(
        settings.async_url(),
        # A fixed pool: overflow connections would be opened and closed under load (a new PostgreSQL
        # backend process each time — the profile showed it); requests wait for a free one instead.
        pool_size=settings.pool_size,
        max_overflow=0,
        pool_timeout=settings.pool_timeout_s,
        pool_pre_ping=True,
        echo=settings.echo,
    )


async def create_pool(settings: DatabaseSettings) -> asyncpg.Pool:
    """The metering pool: a few connections (each hot-path task holds one at a time), prepared statements
    cached per connection, and no reset query on release (its users only run whole transactions)."""
    pool: asyncpg.Pool = await asyncpg.create_pool(
        settings.plain_url(),
        # No floor to restore: while the database is down, asyncpg would log a traceback every second for it.
        min_size=0,
        max_size=settings.metering_pool_size,
        max_inactive_connection_lifetime=0,  # kept open while idle (a quiet minute costs no reconnect)
        reset=_keep_session,
        timeout=settings.pool_timeout_s,
    )
    return pool


async def _keep_session(conn: asyncpg.Connection) -> None:
    """asyncpg has already rolled back an unfinished transaction; there is no session state to reset."""


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


_UNAVAILABLE = (
    OSError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
    sa_exc.TimeoutError,
    sa_exc.InterfaceError,
    asyncpg.InterfaceError,
    # The server ended the session between two statements (a shutdown): the protocol is left consuming its
    # error when the next statement (say COMMIT) starts. Nothing was committed; a fresh connection is next.
    asyncpg.InternalClientError,
    TimeoutError,  # waiting for a pool connection or a connect
)


def is_unavailable(exc: BaseException) -> bool:
    """True when the error means "the database is not reachable", not "the query is wrong"."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, _UNAVAILABLE):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


_DRIVER_ERRORS = (
    sa_exc.DBAPIError,
    sa_exc.TimeoutError,
    sa_exc.InterfaceError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)
_UNIQUE_VIOLATION = "23505"


def is_duplicate(exc: BaseException) -> bool:
    """True when the error is a unique-key violation (SQLAlchemy's wrapper or asyncpg's own)."""
    if isinstance(exc, asyncpg.UniqueViolationError):
        return True
    orig = getattr(exc, "orig", None)
    return isinstance(exc, sa_exc.IntegrityError) and (
        getattr(orig, "sqlstate", None) == _UNIQUE_VIOLATION or isinstance(exc.__cause__, asyncpg.UniqueViolationError)
    )


@asynccontextmanager
async def db_errors(*, duplicate: GatewayError | None = None) -> AsyncIterator[None]:
    """Translate the driver's errors at this one boundary: an unreachable database becomes DatabaseUnavailable
    (503), a duplicate key becomes `duplicate` (when given: its message names what was taken); real bugs pass."""
    try:
        yield
    except _DRIVER_ERRORS as exc:
        if duplicate is not None and is_duplicate(exc):
            raise duplicate from exc
        if is_unavailable(exc):
            raise DatabaseUnavailable() from exc
        raise


guarded = db_errors  # the name the read paths use: no duplicate key to name


@asynccontextmanager
async def transaction(session: AsyncSession, *, duplicate: GatewayError | None = None) -> AsyncIterator[None]:
    """The session's changes (those made before and inside the block) committed once at the end of the block,
    translated as `db_errors` does; on any failure they are rolled back, so the session stays usable."""
    try:
        async with db_errors(duplicate=duplicate):
            yield
            await session.commit()
    except BaseException:
        await session.rollback()
        raise
