"""Reconciliation: usage tokens vs charged vs invoiced tokens vs Stripe, and the ledger's running balances.

Any difference is a failure: the report says which tenant and which column.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from billing.settings import BillingSettings
from billing.stripe_reconcile import payment_problems, stripe_totals

_QUERY = sa.text(
    """
    WITH usage AS (
        SELECT tenant_id, count(*) AS requests, sum(prompt_tokens + completion_tokens) AS tokens
        FROM usage_records GROUP BY tenant_id
    ), charged AS (
        SELECT tenant_id, count(*) AS requests, sum(prompt_tokens + completion_tokens) AS tokens
        FROM ledger_entries WHERE kind = 'charge' AND request_id NOT LIKE 'ftjob-%' GROUP BY tenant_id
    ), charged_closed AS (
        SELECT l.tenant_id, sum(l.prompt_tokens + l.completion_tokens) AS tokens, sum(-l.amount_micros) AS micros
        FROM ledger_entries l JOIN invoices i ON i.tenant_id = l.tenant_id AND i.period = l.period
        WHERE l.kind = 'charge' GROUP BY l.tenant_id
    ), invoiced AS (
        SELECT i.tenant_id, sum(li.prompt_tokens + li.completion_tokens) AS tokens, sum(li.amount_micros) AS micros
        FROM invoices i JOIN invoice_lines li ON li.invoice_id = i.id GROUP BY i.tenant_id
    ), running AS (
        SELECT tenant_id, count(*) FILTER (WHERE balance_after_micros <> run_money OR trial_after <> run_trial) AS bad
        FROM (
            SELECT tenant_id, balance_after_micros, trial_after,
                   sum(amount_micros) OVER w AS run_money, sum(trial_delta) OVER w AS run_trial
            FROM ledger_entries WINDOW w AS (PARTITION BY tenant_id ORDER BY id)
        ) x GROUP BY tenant_id
    ), uncredited AS (
        SELECT p.tenant_id, count(*) AS n FROM stripe_payments p JOIN billing_accounts a ON a.tenant_id = p.tenant_id
        WHERE p.status = 'succeeded' AND p.currency = a.currency AND (
            SELECT count(*) FROM ledger_entries e WHERE e.idempotency_key = p.id AND e.kind = 'credit') <> 1
        GROUP BY p.tenant_id
    ), unmatched AS (
        SELECT e.tenant_id, count(*) AS n FROM ledger_entries e
        WHERE e.kind = 'credit' AND left(e.idempotency_key, 3) = 'pi_' AND NOT EXISTS (
            SELECT 1 FROM stripe_payments p WHERE p.id = e.idempotency_key AND p.status = 'succeeded')
        GROUP BY e.tenant_id
    )
    SELECT t.id AS tenant_id, t.name,
           coalesce(u.requests, 0) AS usage_requests, coalesce(u.tokens, 0) AS usage_tokens,
           coalesce(c.requests, 0) AS charged_requests, coalesce(c.tokens, 0) AS charged_tokens,
           coalesce(cc.tokens, 0) AS closed_charged_tokens, coalesce(cc.micros, 0) AS closed_charged_micros,
           coalesce(iv.tokens, 0) AS invoiced_tokens, coalesce(iv.micros, 0) AS invoiced_micros,
           coalesce(r.bad, 0) AS bad_balances,
           coalesce(pu.n, 0) AS uncredited_payments, coalesce(pm.n, 0) AS unmatched_credits
    FROM tenants t
    LEFT JOIN usage u ON u.tenant_id = t.id
    LEFT JOIN charged c ON c.tenant_id = t.id
    LEFT JOIN charged_closed cc ON cc.tenant_id = t.id
    LEFT JOIN invoiced iv ON iv.tenant_id = t.id
    LEFT JOIN running r ON r.tenant_id = t.id
    LEFT JOIN uncredited pu ON pu.tenant_id = t.id
    LEFT JOIN unmatched pm ON pm.tenant_id = t.id
    ORDER BY t.name
    """
)


@dataclass
class TenantReconciliation:
    tenant_id: str
    name: str
    usage_requests: int
    usage_tokens: int
    charged_requests: int
    charged_tokens: int
    invoiced_tokens: int
    invoiced_micros: int
    closed_charged_tokens: int
    closed_charged_micros: int
    bad_balances: int
    problems: list[str]
    sent_minor: int | None = None  # our invoices that went to Stripe (None: Stripe not checked)
    stripe_minor: int | None = None  # what Stripe holds for them
    unsent_invoices: int = 0
    uncredited_payments: int = 0  # succeeded PaymentIntents without exactly one credit entry
    unmatched_credits: int = 0  # credit entries keyed by a PaymentIntent that is not a succeeded payment of ours


def _problems(r: Any) -> list[str]:
    out = []
    if r.usage_requests != r.charged_requests or r.usage_tokens != r.charged_tokens:
        out.append(
            f"usage {r.usage_requests} requests/{r.usage_tokens} tokens ≠ "
            f"charged {r.charged_requests}/{r.charged_tokens}"
        )
    if r.invoiced_tokens != r.closed_charged_tokens or r.invoiced_micros != r.closed_charged_micros:
        out.append(
            f"invoiced {r.invoiced_tokens} tokens/{r.invoiced_micros} µ ≠ "
            f"charged in closed periods {r.closed_charged_tokens}/{r.closed_charged_micros} µ"
        )
    if r.uncredited_payments:
        out.append(f"{r.uncredited_payments} succeeded Stripe payments without exactly one credit entry")
    if r.unmatched_credits:
        out.append(f"{r.unmatched_credits} credit entries from Stripe without a succeeded payment")
    if r.bad_balances:
        out.append(f"{r.bad_balances} ledger entries whose running balance is not the sum of the entries before")
    return out


async def reconcile(conn: AsyncConnection, stripe: BillingSettings | None = None) -> list[TenantReconciliation]:
    """The report; with Stripe settings (an API key), each sent invoice is also compared with Stripe's copy."""
    rows = (await conn.execute(_QUERY)).all()
    report = []
    for r in rows:
        numbers = {k: int(v) for k, v in r._mapping.items() if k not in ("tenant_id", "name")}
        report.append(TenantReconciliation(tenant_id=r.tenant_id, name=r.name, **numbers, problems=_problems(r)))
    if stripe is not None and stripe.stripe_api_key is not None:
        remote = await stripe_totals(conn, stripe)
        for entry in report:
            totals = remote.get(entry.tenant_id)
            entry.sent_minor = totals.ours_minor if totals else 0
            entry.stripe_minor = totals.stripe_minor if totals else 0
            entry.unsent_invoices = totals.unsent if totals else 0
            entry.problems.extend(totals.problems if totals else [])
        for tenant_id, problems in (await payment_problems(conn, stripe)).items():
            for entry in report:
                if entry.tenant_id == tenant_id:
                    entry.problems.extend(problems)
    return report


def as_dicts(report: list[TenantReconciliation]) -> list[dict[str, Any]]:
    return [asdict(r) for r in report]


def render(report: list[TenantReconciliation]) -> str:
    lines = [
        f"{'tenant':<24} {'usage tokens':>13} {'charged':>13} {'invoiced':>13} {'sent':>10} {'on Stripe':>10}  status",
    ]
    for r in report:
        status = "ok" if not r.problems else "MISMATCH: " + "; ".join(r.problems)
        sent = "-" if r.sent_minor is None else str(r.sent_minor)
        remote = "-" if r.stripe_minor is None else str(r.stripe_minor)
        lines.append(
            f"{r.name[:24]:<24} {r.usage_tokens:>13} {r.charged_tokens:>13} {r.invoiced_tokens:>13} "
            f"{sent:>10} {remote:>10}  {status}"
        )
    bad = sum(1 for r in report if r.problems)
    lines.append(f"\n{len(report)} tenants, {bad} with differences")
    return "\n".join(lines)
