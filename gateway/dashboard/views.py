"""The overview and tenant pages, rendered for their GET routes and again, with the error, for a refused form."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.response import Template
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.dashboard import applications, charts, service
from gateway.dashboard.pages import page
from gateway.settings import Settings


def window(name: str) -> service.Window:
    return service.WINDOWS.get(name, service.WINDOWS["24h"])


async def overview(
    request: Request[Any, Any, Any], db: AsyncEngine, settings: Settings, range_: str = "24h", **extra: Any
) -> Template:
    w = window(range_)
    data = await service.overview(db, w)
    currency = settings.billing.currency
    return page(
        request, "overview.html", data=data, window=w, windows=list(service.WINDOWS), currency=currency,
        in_flight=service.in_flight(request.app.state), charts=charts.overview(data, w, currency),
        billing=settings.billing, applications=await applications.pending(db), **extra,
    )  # fmt: skip


async def tenant(
    request: Request[Any, Any, Any], db: AsyncEngine, settings: Settings, tenant_id: str, range_: str = "7d",
    **extra: Any,
) -> Template:  # fmt: skip
    w = window(range_)
    data = await service.tenant_page(db, tenant_id, w)
    currency = data["balance"].currency
    return page(
        request, "tenant.html", data=data, window=w, windows=list(service.WINDOWS), currency=currency,
        charts=charts.tenant(data, w, currency), defaults=settings.tenants, **extra,
    )  # fmt: skip
