"""Dunning: an invoice still unpaid BILLING_GRACE_DAYS after its due date suspends its tenant; paying it (or an
operator's waiver) resumes the tenant at once. Each change and its audit row commit together.

An invoice's `dunning` says where it stands: NULL (the rule watches it), `suspended` (it suspended its
tenant), `resolved` (paid after that) or `waived` (an operator resumed the tenant: the rule leaves it alone).
A tenant suspended by hand (no `suspended_reason`) is never resumed by a payment.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from billing import payments
from billing.ledger import INVOICES
from billing.settings import BillingSettings
from gateway.audit.service import Actor, record
from gateway.auth.models import Tenant
from gateway.errors import NotFound
from gateway.timeutil import utcnow

ENTRYPOINT = "billing_dunning"
REASON = "invoice_overdue"
BILLING = Actor("billing")  # who the automatic rules act as
WHERE_TO_PAY = (
    "Pay it from the link in Stripe's invoice e-mail or on the console's Billing page (GET /v1/invoices lists it); "
    "access resumes as soon as it is paid."
)
_TENANTS = Tenant.__table__  # type: ignore[attr-defined]


async def check(db: AsyncEngine, settings: BillingSettings, now: datetime | None = None) -> list[str]:
    """Suspend the tenants with an invoice overdue past the grace period; the tenants suspended now."""
    now = now or utcnow()
    cutoff = now - timedelta(days=settings.grace_days)
    overdue = (
        sa.select(INVOICES.c.id, INVOICES.c.tenant_id)
        .where(INVOICES.c.status == "open", INVOICES.c.dunning.is_(None), INVOICES.c.due_at < cutoff)
        .order_by(INVOICES.c.tenant_id, INVOICES.c.id)
        .with_for_update(skip_locked=True)
    )
    suspended = []
    async with db.begin() as conn:
        by_tenant: dict[str, list[str]] = defaultdict(list)
        for row in await conn.execute(overdue):
            by_tenant[row.tenant_id].append(row.id)
        for tenant_id, invoice_ids in by_tenant.items():
            await conn.execute(sa.update(INVOICES).where(INVOICES.c.id.in_(invoice_ids)).values(dunning="suspended"))
            done = await conn.execute(
                sa.update(_TENANTS)
                .where(_TENANTS.c.id == tenant_id, _TENANTS.c.suspended_at.is_(None))
                .values(suspended_at=now, suspended_reason=REASON)
            )
            if done.rowcount:
                suspended.append(tenant_id)
                detail = {"reason": REASON, "invoices": invoice_ids, "grace_days": settings.grace_days}
                await record(conn, BILLING, "tenant.suspend", tenant_id, detail)
                message = f"Your account is suspended: invoice {', '.join(invoice_ids)} is overdue. {WHERE_TO_PAY}"
                await payments.notify(conn, tenant_id, "suspended", message, invoice_ids[0])
    return suspended


async def _resume_if_clear(conn: AsyncConnection, tenant_id: str, actor: Actor, detail: dict[str, Any]) -> bool:
    still = sa.select(INVOICES.c.id).where(
        INVOICES.c.tenant_id == tenant_id, INVOICES.c.status == "open", INVOICES.c.dunning == "suspended"
    )
    if (await conn.execute(still.limit(1))).first() is not None:
        return False
    done = await conn.execute(
        sa.update(_TENANTS)
        .where(_TENANTS.c.id == tenant_id, _TENANTS.c.suspended_reason == REASON)
        .values(suspended_at=None, suspended_reason=None)
    )
    if done.rowcount:
        await record(conn, actor, "tenant.resume", tenant_id, detail)
    return bool(done.rowcount)


async def invoice_paid(conn: AsyncConnection, stripe_invoice: dict[str, Any]) -> bool:
    """After `invoice.paid` marked ours paid (same transaction): resume its tenant if it was what held it."""
    meta = stripe_invoice.get("metadata") or {}
    ours = sa.or_(
        INVOICES.c.stripe_invoice_id == str(stripe_invoice.get("id")),
        INVOICES.c.id == str(meta.get("lgw_invoice_id", "")),
    )
    inv = (await conn.execute(sa.select(INVOICES).where(ours).limit(1))).first()
    if inv is None or inv.dunning != "suspended":
        return False
    await conn.execute(sa.update(INVOICES).where(INVOICES.c.id == inv.id).values(dunning="resolved"))
    return await _resume_if_clear(conn, inv.tenant_id, BILLING, {"reason": "invoice_paid", "invoice": inv.id})


async def waive(conn: AsyncConnection, invoice_id: str, actor: Actor) -> dict[str, Any]:
    """An operator's waiver: the rule leaves this invoice alone, and its tenant resumes if nothing else holds it."""
    inv = (await conn.execute(sa.select(INVOICES).where(INVOICES.c.id == invoice_id).with_for_update())).first()
    if inv is None:
        raise NotFound(f"No invoice {invoice_id!r}.", param="invoice_id")
    await conn.execute(sa.update(INVOICES).where(INVOICES.c.id == invoice_id).values(dunning="waived"))
    await record(conn, actor, "invoice.waive", invoice_id, {"tenant_id": inv.tenant_id, "was": inv.dunning})
    resumed = await _resume_if_clear(conn, inv.tenant_id, actor, {"reason": "waived", "invoice": invoice_id})
    return {"object": "invoice", "id": invoice_id, "dunning": "waived", "tenant_resumed": resumed}


async def waive_all(conn: AsyncConnection, tenant_id: str) -> None:
    """An operator resumed a tenant by hand: the invoices that had suspended it are waived."""
    await conn.execute(
        sa.update(INVOICES)
        .where(INVOICES.c.tenant_id == tenant_id, INVOICES.c.dunning == "suspended")
        .values(dunning="waived")
    )
    await conn.execute(sa.update(_TENANTS).where(_TENANTS.c.id == tenant_id).values(suspended_reason=None))
