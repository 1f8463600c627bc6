"""The payments worker, on the pgqueuer queue: auto-recharge jobs, and the dunning check as a pgqueuer schedule.

Every gateway process with Stripe configured runs one (one asyncpg connection); pgqueuer hands each job to one
worker and fires each schedule tick once across them. The auto-recharge job is idempotent: it acts only while
its crossing key is the account's pending one, and the key is the Stripe idempotency key of the charge.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from typing import Any

import asyncpg
import stripe
from sqlalchemy.ext.asyncio import AsyncEngine

from billing import auto_recharge, payments
from billing.errors import PaymentDeclined, StripeRejected, StripeUnavailable
from billing.settings import BillingSettings
from billing.sql import Alchemy
from billing.stripe_api import stripe_client
from gateway import queue
from gateway.audit.service import record
from gateway.payments import dunning
from gateway.payments.dunning import BILLING
from gateway.settings import Settings

log = logging.getLogger(__name__)
RETRY_AFTER = timedelta(seconds=30)
NEEDS_AUTH = (
    "The card needs authentication (3-D Secure) for a charge made while you are away, so auto-recharge is off. "
    "Top up once by hand or add another card, then turn it on again."
)


async def recharge(db: AsyncEngine, settings: BillingSettings, tenant_id: str, key: str) -> str:
    """Charge the card on file once for the crossing `key`; what happened."""
    async with db.connect() as conn:
        acc = await auto_recharge.read(conn, tenant_id)
    if acc.auto_recharge_pending != key:
        return "stale"
    if not acc.auto_recharge_enabled or not acc.stripe_payment_method_id or not acc.stripe_customer_id:
        return await _turn_off(db, tenant_id, key, "There is no card on file, so auto-recharge is off.")
    try:
        async with stripe_client(settings) as client:
            pi = await payments.create_payment(
                client, tenant_id=tenant_id, customer=acc.stripe_customer_id, amount=acc.auto_recharge_amount,
                currency=acc.currency, purpose="auto_recharge", payment_method=acc.stripe_payment_method_id,
                off_session=True, key=key,
            )  # fmt: skip
    except PaymentDeclined as exc:
        return await _turn_off(db, tenant_id, key, f"The card was declined ({exc.message}), so auto-recharge is off.")
    except StripeUnavailable as exc:  # same key later: Stripe pays it once
        log.warning("auto-recharge %s postponed: %s", key, exc.message)
        async with db.begin() as conn:
            await auto_recharge.enqueue(Alchemy(conn), [(tenant_id, key)], RETRY_AFTER, f"{key}@{time.time():.0f}")
        return "postponed"
    except StripeRejected as exc:
        return await _turn_off(db, tenant_id, key, f"Stripe refused the charge ({exc.message}); auto-recharge is off.")
    async with db.begin() as conn:
        outcome = await payments.settle(conn, pi)
        status = pi.get("status")
        if status == payments.FINAL_OK:
            detail = {"payment_intent": pi["id"], "amount": acc.auto_recharge_amount, "key": key, "outcome": outcome}
            await record(conn, BILLING, "billing.auto_recharge_charged", tenant_id, detail)
            return "charged"
        if status == "processing":  # the webhook settles it (and frees the next crossing)
            return "processing"
    reason = NEEDS_AUTH if status == "requires_action" else f"The charge did not go through ({status})."
    if status in ("requires_action", "requires_confirmation", "requires_payment_method"):
        try:
            async with stripe_client(settings) as client:
                await client.v1.payment_intents.cancel_async(str(pi["id"]))
        except (stripe.StripeError, StripeRejected) as exc:  # best effort: an unconfirmed one charges nothing
            log.info("could not cancel %s: %s", pi["id"], exc)
    return await _turn_off(db, tenant_id, key, reason, str(pi["id"]))


async def _turn_off(db: AsyncEngine, tenant_id: str, key: str, reason: str, ref: str | None = None) -> str:
    async with db.begin() as conn:
        if await auto_recharge.disable(conn, tenant_id, reason, key):
            await record(conn, BILLING, "billing.auto_recharge_off", tenant_id, {"reason": reason, "key": key})
            await payments.notify(conn, tenant_id, "auto_recharge_off", reason, ref or key)
    log.warning("auto-recharge of %s turned off: %s", tenant_id, reason)
    return "turned_off"


async def run_worker(db: AsyncEngine, settings: Settings) -> None:
    """Consume payment jobs and fire the dunning schedule until cancelled (reconnecting if the database goes)."""
    from pgqueuer import PgQueuer

    while True:
        conn: asyncpg.Connection | None = None
        try:
            conn = await asyncpg.connect(settings.database.plain_url())
            pgq = PgQueuer.from_asyncpg_connection(conn)

            @pgq.entrypoint(queue.AUTO_RECHARGE)
            async def charge(job: Any) -> None:
                payload = queue.payload_of(job)
                outcome = await recharge(db, settings.billing, payload["tenant_id"], payload["key"])
                log.info("auto-recharge %s: %s", payload["key"], outcome)

            @pgq.schedule(queue.DUNNING, settings.billing.dunning_schedule)
            async def overdue(schedule: Any) -> None:
                suspended = await dunning.check(db, settings.billing)
                if suspended:
                    log.warning("dunning suspended %d tenants: %s", len(suspended), ", ".join(suspended))

            await pgq.run(dequeue_timeout=timedelta(seconds=5), batch_size=2, max_concurrent_tasks=4)
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("payments worker lost the database (%s); reconnecting", exc)
        except Exception:  # a supervisor: the worker must outlive a bug in one pass, and say so loudly
            log.exception("payments worker failed; restarting in 5 s")
        finally:
            if conn is not None:
                conn.terminate()
        await asyncio.sleep(5)
