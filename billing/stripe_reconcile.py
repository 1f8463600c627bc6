"""Our invoices against what Stripe holds for them: the last column of the reconciliation report."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from billing.errors import StripeRejected
from billing.ledger import INVOICES
from billing.payments import PAYMENTS
from billing.settings import BillingSettings
from billing.stripe_api import call, stripe_client


@dataclass
class StripeTotals:
    ours_minor: int = 0  # total of our invoices that were sent to Stripe
    stripe_minor: int = 0  # what Stripe's copies of them add up to (our lines only)
    unsent: int = 0  # closed invoices still waiting in the outbox (not a difference)
    problems: list[str] = field(default_factory=list)


async def stripe_totals(conn: AsyncConnection, settings: BillingSettings) -> dict[str, StripeTotals]:
    """tenant → our invoiced minor units vs Stripe's, invoice by invoice."""
    rows = (await conn.execute(sa.select(INVOICES.c.id, INVOICES.c.tenant_id, INVOICES.c.total_minor,
                                         INVOICES.c.stripe_invoice_id))).all()  # fmt: skip
    out: dict[str, StripeTotals] = defaultdict(StripeTotals)
    async with stripe_client(settings) as client:
        for row in rows:
            totals = out[row.tenant_id]
            if row.stripe_invoice_id is None:
                totals.unsent += 1
                continue
            remote = await call(client.v1.invoices.retrieve_async(row.stripe_invoice_id))
            ours_on_stripe = sum(int(line.amount) for line in remote.lines.data if _is_ours(line, row.id))
            totals.ours_minor += row.total_minor
            totals.stripe_minor += ours_on_stripe
            if ours_on_stripe != row.total_minor:
                totals.problems.append(
                    f"invoice {row.id}: {row.total_minor} here, {ours_on_stripe} on Stripe ({row.stripe_invoice_id})"
                )
    return dict(out)


def _is_ours(line: Any, invoice_id: str) -> bool:
    metadata: dict[str, str] = dict(line.to_dict().get("metadata") or {})
    return metadata.get("lgw_invoice_id") == invoice_id


async def payment_problems(conn: AsyncConnection, settings: BillingSettings) -> dict[str, list[str]]:
    """tenant → our payments whose state differs from Stripe's: a PaymentIntent that succeeded on Stripe but is
    not credited here (a webhook and a read-back both missed), or one credited here that Stripe does not call
    succeeded."""
    rows = (await conn.execute(sa.select(PAYMENTS.c.id, PAYMENTS.c.tenant_id, PAYMENTS.c.credited,
                                         PAYMENTS.c.error))).all()  # fmt: skip
    out: dict[str, list[str]] = defaultdict(list)
    async with stripe_client(settings) as client:
        for row in rows:
            try:
                remote = await call(client.v1.payment_intents.retrieve_async(row.id))
            except StripeRejected as exc:
                out[row.tenant_id].append(f"payment {row.id}: {exc.message}")
                continue
            succeeded = remote.status == "succeeded"
            if succeeded and not row.credited and row.error is None:
                out[row.tenant_id].append(f"payment {row.id} succeeded on Stripe but is not credited")
            elif row.credited and not succeeded:
                out[row.tenant_id].append(f"payment {row.id} is credited but is {remote.status} on Stripe")
    return dict(out)
