"""Operator usage queries: filters, grouping, totals with cost; the same as CSV."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Any

from litestar import Controller, Response, get
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.accounts.schemas import minor
from gateway.admin.guard import admin_guard
from gateway.errors import InvalidRequest
from gateway.usage.queries import GROUP_COLUMNS, GROUPS, UsageFilter, usage_summary


def _groups(group_by: str | None) -> list[str]:
    groups = [g.strip() for g in (group_by or "day").split(",") if g.strip()]
    bad = [g for g in groups if g not in GROUPS]
    if bad or not groups:
        raise InvalidRequest(f"group_by takes one or more of {', '.join(GROUPS)} (comma-separated).", param="group_by")
    return groups


def _rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**r, "cost": minor(r["cost_micros"])} for r in rows]


class AdminUsageController(Controller):
    path = "/admin"
    guards = [admin_guard]
    tags = ["Admin"]

    async def _query(
        self, db: AsyncEngine, tenant_id: str | None, key_id: str | None, model: str | None,
        start: datetime | None, end: datetime | None, group_by: str | None,
    ) -> list[dict[str, Any]]:  # fmt: skip
        f = UsageFilter(tenant_id=tenant_id, key_id=key_id, model=model, start=start, end=end)
        return _rows(await usage_summary(db, f, _groups(group_by)))

    @get("/usage")
    async def usage(
        self, db_engine: AsyncEngine, tenant_id: str | None = None, key_id: str | None = None,
        model: str | None = None, start: datetime | None = None, end: datetime | None = None,
        group_by: str | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Requests, errors, tokens and cost, grouped by day|hour|tenant|model|key|status (comma-separated)."""
        rows = await self._query(db_engine, tenant_id, key_id, model, start, end, group_by)
        totals = {k: sum(r[k] for r in rows) for k in ("requests", "errors", "prompt_tokens", "completion_tokens",
                                                        "cost_micros")}  # fmt: skip
        return {"object": "list", "group_by": _groups(group_by), "data": rows, "totals": totals}

    @get("/usage.csv")
    async def usage_csv(
        self, db_engine: AsyncEngine, tenant_id: str | None = None, key_id: str | None = None,
        model: str | None = None, start: datetime | None = None, end: datetime | None = None,
        group_by: str | None = None,
    ) -> Response[str]:  # fmt: skip
        """The same rows as /admin/usage, as CSV."""
        rows = await self._query(db_engine, tenant_id, key_id, model, start, end, group_by)
        out = io.StringIO()
        fields = [GROUP_COLUMNS[g] for g in _groups(group_by)]
        fields += ["requests", "errors", "prompt_tokens", "completion_tokens", "cost", "cost_micros"]
        writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return Response(
            out.getvalue(), media_type="text/csv", headers={"Content-Disposition": 'attachment; filename="usage.csv"'}
        )
