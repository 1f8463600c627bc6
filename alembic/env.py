"""Alembic environment: async, URL from gateway settings (or the caller's config), metadata from the models."""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from alembic import context
from gateway.db import metadata
from gateway.settings import DatabaseSettings, to_asyncpg_url

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = metadata().metadata
import billing.models  # noqa: E402,F401  (billing owns its tables; registered on the same metadata)


def _url() -> str:
    url = config.attributes.get("database_url") or DatabaseSettings().url
    if not url:
        raise SystemExit("DATABASE_URL is not set")
    return to_asyncpg_url(url)


def _ours(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    """pgqueuer's tables (created from its own DDL by a migration, not modelled here) are not ours to compare."""
    table = getattr(obj, "table", obj) if type_ in ("index", "column") else obj
    return not str(getattr(table, "name", name) or "").startswith("pgqueuer")


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True, include_object=_ours)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_async_engine(_url())
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
