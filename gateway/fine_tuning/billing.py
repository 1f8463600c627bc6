"""The bill of a fine-tuning job: what it holds while it runs, what it is charged when it ends."""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.fine_tuning.models import FineTuningJob


async def settle(session: AsyncSession, job: FineTuningJob, trained_tokens: int) -> None:
    """Charge exactly `trained_tokens` and release the hold, in the caller's transaction (once per job)."""
    if job.charged:
        return
    job.trained_tokens = trained_tokens
    job.charged = True
    job.hold_micros = job.hold_tokens = 0
