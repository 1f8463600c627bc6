"""cache invalidation: NOTIFY gateway_cache when a key, tenant or adapter row changes

Revision ID: 20261126_0008
Revises: 20261125_0007
Create Date: 2026-11-26 12:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "20261126_0008"
down_revision: str | None = "20261125_0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, kind, column whose value is sent): gateway/cache.py drops what it cached under that id.
_WATCHED = (("api_keys", "key", "id"), ("tenants", "tenant", "id"), ("adapters", "adapter", "tenant_id"))


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION gateway_cache_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('gateway_cache', TG_ARGV[0] || ':' || (to_jsonb(OLD) ->> TG_ARGV[1]));
            RETURN NULL;
        END
        $$
        """
    )
    for table, kind, column in _WATCHED:
        op.execute(
            f"CREATE TRIGGER {table}_cache_notify AFTER UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION gateway_cache_notify('{kind}', '{column}')"
        )


def downgrade() -> None:
    for table, _, _ in _WATCHED:
        op.execute(f"DROP TRIGGER {table}_cache_notify ON {table}")
    op.execute("DROP FUNCTION gateway_cache_notify()")
