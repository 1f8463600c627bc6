"""Usage queries for operators: filter, group, total; cost from the billing ledger (one charge per request)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Mapped
from sqlmodel import col

from billing.ledger import LEDGER
from gateway.db import guarded
from gateway.errors import InvalidRequest
from gateway.usage.models import UsageRecord, UsageStatus

# Each group and the column it is returned in (a row of group_by=tenant,key has tenant_id and key_id).
GROUP_COLUMNS = {
    "day": "day",
    "hour": "hour",
    "tenant": "tenant_id",
    "model": "model",
    "key": "key_id",
    "status": "status",
}
GROUPS = tuple(GROUP_COLUMNS)
# Failed requests: refused or failed with an HTTP error, or cut off after a 200 (the stream broke at the engine,
# or the gateway serving it died). A client that hung up (client_closed) is not an error.
_FAILED_AFTER_200 = (UsageStatus.ENGINE_ERROR, UsageStatus.GATEWAY_LOST)


@dataclass(frozen=True)
class UsageFilter:
    tenant_id: str | None = None
    key_id: str | None = None
    model: str | None = None  # the name the client used, a deployment id, or the base model
    start: datetime | None = None
    end: datetime | None = None


def _group_column(group_by: str) -> sa.ColumnElement[Any]:
    u = UsageRecord
    expression: sa.ColumnElement[Any] | Mapped[Any]
    if group_by == "day":
        expression = sa.func.to_char(sa.func.timezone("UTC", col(u.started_at)), "YYYY-MM-DD")
    elif group_by == "hour":
        expression = sa.func.to_char(sa.func.timezone("UTC", col(u.started_at)), 'YYYY-MM-DD"T"HH24:00"Z"')
    elif group_by == "tenant":
        expression = col(u.tenant_id)
    elif group_by == "model":
        expression = sa.func.coalesce(col(u.adapter_id), col(u.base_model))
    elif group_by == "key":
        expression = col(u.api_key_id)
    elif group_by == "status":
        expression = col(u.status)
    else:
        raise InvalidRequest(f"group_by must be one of {', '.join(GROUPS)}.", param="group_by")
    return expression.label(GROUP_COLUMNS[group_by])


async def usage_summary(db: AsyncEngine, f: UsageFilter, group_by: list[str]) -> list[dict[str, Any]]:
    """Rows of the group columns plus requests, errors, prompt_tokens, completion_tokens, cost_micros."""
    u = UsageRecord
    groups = [_group_column(g) for g in group_by]
    failed = sa.or_(col(u.http_status) >= 400, col(u.status).in_(_FAILED_AFTER_200))
    stmt = (
        sa.select(
            *groups,
            sa.func.count().label("requests"),
            sa.func.count().filter(failed).label("errors"),
            sa.func.coalesce(sa.func.sum(u.prompt_tokens), 0).label("prompt_tokens"),
            sa.func.coalesce(sa.func.sum(u.completion_tokens), 0).label("completion_tokens"),
            sa.func.coalesce(sa.func.sum(-LEDGER.c.amount_micros), 0).label("cost_micros"),
        )
        .select_from(u)
        .outerjoin(LEDGER, LEDGER.c.request_id == col(u.request_id))
        .group_by(*groups)
        .order_by(*groups)
    )
    if f.tenant_id:
        stmt = stmt.where(col(u.tenant_id) == f.tenant_id)
    if f.key_id:
        stmt = stmt.where(col(u.api_key_id) == f.key_id)
    if f.model:
        stmt = stmt.where(sa.or_(col(u.model) == f.model, col(u.adapter_id) == f.model, col(u.base_model) == f.model))
    if f.start:
        stmt = stmt.where(col(u.started_at) >= f.start)
    if f.end:
        stmt = stmt.where(col(u.started_at) < f.end)
    async with guarded(), db.connect() as conn:
        return [{k: (int(v) if k in _NUMBERS else v) for k, v in r._mapping.items()} for r in await conn.execute(stmt)]


_NUMBERS = {"requests", "errors", "prompt_tokens", "completion_tokens", "cost_micros"}
