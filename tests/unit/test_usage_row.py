"""The usage row has one definition: the table. The hot path's dict and its INSERT follow it."""

from __future__ import annotations

import typing
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from gateway.admission import sql
from gateway.usage.models import UsageRecord, UsageRow, UsageStatus, usage_row

TABLE = sa.inspect(UsageRecord).local_table


def test_the_row_has_exactly_the_tables_columns_but_id_with_their_types() -> None:
    hints = typing.get_type_hints(UsageRow)
    model = typing.get_type_hints(UsageRecord)
    assert set(hints) == {c.name for c in TABLE.columns} - {"id"}
    for name, hint in hints.items():
        assert hint == model[name] or (name == "status" and issubclass(hint, str)), name


def test_the_insert_names_every_column_of_the_row_once() -> None:
    assert [c for c, _ in sql.USAGE_COLUMNS] == [c.name for c in TABLE.columns if c.name != "id"]
    assert f"INSERT INTO usage_records ({', '.join(c for c, _ in sql.USAGE_COLUMNS)})" in sql.INSERT_USAGE
    # one array parameter per column, after the open rows to close ($1)
    assert f"${len(sql.USAGE_COLUMNS) + 1}::" in sql.INSERT_USAGE
    assert f"${len(sql.USAGE_COLUMNS) + 2}" not in sql.INSERT_USAGE
    types = dict(sql.USAGE_COLUMNS)
    assert types["stream"] == "boolean" and types["started_at"] == "timestamptz" and types["model"] == "text"


def test_usage_row_fills_every_key_and_the_latency() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    row = usage_row(
        request_id="req_1", tenant_id="tnt_1", api_key_id="key_1", model="m", base_model="m", adapter_id=None,
        endpoint="/v1/completions", stream=False, prompt_tokens=1, completion_tokens=2, status=UsageStatus.OK,
        http_status=200, started_at=start, finished_at=start + timedelta(milliseconds=1500),
    )  # fmt: skip
    assert set(row) == set(typing.get_type_hints(UsageRow))
    assert row["latency_ms"] == 1500


def test_statuses_are_the_strings_stored() -> None:
    assert [str(s) for s in UsageStatus] == ["ok", "rejected", "engine_error", "client_closed", "gateway_lost"]
    assert UsageStatus.CLIENT_CLOSED == "client_closed"
