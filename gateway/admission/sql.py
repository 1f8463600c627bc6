"""Every statement the gateway runs per request (admission, settlement, checkpoints) and for the sweep.

They run on asyncpg directly, as prepared statements cached per connection (gateway/db.py says why). Batches
pass one array parameter per column (`unnest`), so a statement has the same text for any batch size and is
prepared once per connection. Billing's own statements stay in billing/ (it never imports gateway/): the
charge of usage rows (billing/ledger.py: charge_usage, run in the usage transaction) and the fragments of the
account read below (LATEST, PRICES_OF).
"""

from __future__ import annotations

import sqlalchemy as sa

from billing.ledger import LATEST, PRICES_OF
from billing.sql import unnest
from gateway.usage.models import UsageRecord

# --- Admission (gateway/admission/open_requests.py) -------------------------------------------------------

# Tenants in sorted order, so that two batches (any processes) never wait for each other's locks in a cycle.
LOCK_TENANTS = "SELECT pg_advisory_xact_lock(hashtextextended(t, 7231)) FROM unnest($1::text[]) AS t"
# What the tenants' open requests hold: a statement of its own, so that its snapshot is taken after the locks.
HELD = """
    SELECT tenant_id, api_key_id, count(*) AS open,
           coalesce(sum(reserved_trial_tokens), 0) AS tokens, coalesce(sum(reserved_micros), 0) AS micros
    FROM open_requests WHERE tenant_id = ANY($1::text[]) GROUP BY tenant_id, api_key_id
"""
# Each tenant's billing mode, credit and trial tokens as the ledger has them now, and the price versions of
# the batch's models: one statement.
ACCOUNTS_AND_PRICES = f"""
    SELECT (
        SELECT array_agg(ROW(a.tenant_id, a.mode, coalesce(l.balance_after_micros, 0), coalesce(l.trial_after, 0)))
        FROM billing_accounts a LEFT JOIN ({LATEST}) AS l ON l.tenant_id = a.tenant_id
        WHERE a.tenant_id = ANY($1::text[])
    ) AS states, {PRICES_OF.format("$2")} AS prices
"""
# One statement: whether each request's key, tenant and adapter are still live, and the open rows of those
# that are (a cache may have served a key revoked or an adapter deleted a moment ago).
OPEN = """
    WITH r AS (
        SELECT * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
            $9::boolean[], $10::bigint[], $11::bigint[], $12::timestamptz[])
          AS r(request_id, tenant_id, api_key_id, model, base_model, adapter_id, endpoint, stream, tokens, micros,
               started_at)
    ), checked AS (
        SELECT r.*, (k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now())) AS key_live,
               (t.suspended_at IS NULL AND t.status = 'active') AS tenant_live,
               (r.adapter_id IS NULL OR (a.deleted_at IS NULL AND a.status = 'ready')) AS adapter_live
        FROM r JOIN api_keys k ON k.id = r.api_key_id JOIN tenants t ON t.id = r.tenant_id
        LEFT JOIN adapters a ON a.id = r.adapter_id
    ), inserted AS (
        INSERT INTO open_requests (request_id, instance_id, tenant_id, api_key_id, model, base_model, adapter_id,
            endpoint, stream, reserved_trial_tokens, reserved_micros, prompt_tokens, completion_tokens, started_at)
        SELECT request_id, $1, tenant_id, api_key_id, model, base_model, adapter_id, endpoint, stream,
            tokens, micros, 0, 0, started_at
        FROM checked WHERE key_live AND tenant_live AND adapter_live
    )
    SELECT request_id, key_live, tenant_live, adapter_live FROM checked
"""

# --- Rate windows (gateway/admission/limits.py) -----------------------------------------------------------

# Lock (creating them at 0) the counter rows a batch touches, in sorted order so that two batches never wait for
# each other in a cycle, and read them. A NULL window is the current minute: the statement's, not the
# transaction's (an admission reaches this after waiting for its tenants' locks). ON CONFLICT DO UPDATE reads
# the newest version of a row, committed after this statement's snapshot or not.
LOCK_WINDOWS = """
    INSERT INTO rate_counters (subject, window_start, requests, tokens)
    SELECT DISTINCT s, coalesce(w, date_trunc('minute', statement_timestamp())), 0, 0
    FROM unnest($1::text[], $2::timestamptz[]) AS u(s, w) ORDER BY 1, 2
    ON CONFLICT (subject, window_start) DO UPDATE SET requests = rate_counters.requests
    RETURNING subject, window_start, requests, tokens,
      ceil(extract(epoch FROM (window_start + interval '1 minute' - statement_timestamp())))::int AS reset_s
"""
ADD_TO_WINDOWS = """
    UPDATE rate_counters c SET requests = c.requests + d.r, tokens = greatest(c.tokens + d.t, 0)
    FROM unnest($1::text[], $2::timestamptz[], $3::integer[], $4::bigint[]) AS d(s, w, r, t)
    WHERE c.subject = d.s AND c.window_start = d.w
"""
PRUNE_WINDOWS = "DELETE FROM rate_counters WHERE window_start < now() - interval '5 minutes'"

# --- Settlement (gateway/usage/writer.py) -----------------------------------------------------------------

_ARRAY_TYPES = ((sa.BigInteger, "bigint"), (sa.Integer, "integer"), (sa.Boolean, "boolean"), (sa.String, "text"))


def _array_type(column: sa.Column[object]) -> str:
    """The PostgreSQL type of `column`'s unnest parameter (text for any varchar: the column checks the length)."""
    kind = column.type.impl_instance if isinstance(column.type, sa.TypeDecorator) else column.type
    if isinstance(kind, sa.DateTime):
        return "timestamptz" if kind.timezone else "timestamp"
    for base, name in _ARRAY_TYPES:
        if isinstance(kind, base):
            return name
    raise TypeError(f"no array type for {column.name} ({column.type!r})")


_USAGE_TABLE = sa.inspect(UsageRecord).local_table
assert isinstance(_USAGE_TABLE, sa.Table)
# (column, array type) of a usage row, from the table: every column but the generated id.
USAGE_COLUMNS = tuple((c.name, _array_type(c)) for c in _USAGE_TABLE.columns if c.name != "id")
# A request_id already present means the row was written: never count a request twice. The open rows named
# in $1 are deleted by the same statement (one round trip less per batch).
INSERT_USAGE = (
    "WITH closed AS (DELETE FROM open_requests WHERE request_id = ANY($1::text[])) "
    f"INSERT INTO usage_records ({', '.join(c for c, _ in USAGE_COLUMNS)}) "
    f"SELECT * FROM {unnest(USAGE_COLUMNS, 2)} "
    "ON CONFLICT (request_id) DO NOTHING RETURNING request_id"
)
CLOSE = "DELETE FROM open_requests WHERE request_id = ANY($1::text[])"
CHECKPOINT = """
    UPDATE open_requests o SET prompt_tokens = c.p, completion_tokens = c.c, checkpoint_at = now()
    FROM unnest($1::text[], $2::integer[], $3::integer[]) AS c(id, p, c)
    WHERE o.request_id = c.id
"""

# --- Gateway processes and the sweep (gateway/usage/instances.py) -----------------------------------------

REGISTER = """
    INSERT INTO gateway_instances (id, host, pid, started_at, heartbeat_at, expires_at)
    VALUES ($1, $2, $3, now(), now(), now() + make_interval(secs => $4))
    ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), expires_at = EXCLUDED.expires_at
"""
GOODBYE = "DELETE FROM gateway_instances WHERE id = $1"
FORGET = "DELETE FROM gateway_instances WHERE expires_at < now() - interval '1 hour'"
ORPHANS = """
    DELETE FROM open_requests o
    WHERE (o.instance_id <> $1 AND NOT EXISTS (
              SELECT 1 FROM gateway_instances g WHERE g.id = o.instance_id AND g.expires_at >= now()))
       OR (o.instance_id = $1 AND NOT (o.request_id = ANY($2::text[])) AND o.started_at < $3)
    RETURNING o.*
"""
