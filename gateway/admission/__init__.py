"""Admission and metering on the per-request path: what every request pays for before and after the engine.

    open_requests.py  admit a request: limits, concurrency, prepaid holds, its open row; one group commit
    holds.py          what a tenant's open requests hold (billing/admission.py decides each new hold)
    limits.py         per-minute rate windows, counted at admission and corrected at settlement
    sql.py            every asyncpg statement of that path (billing's own stay in billing/)
    group_commit.py   the one group-commit helper (admissions, usage rows, rate corrections)
    retry.py          the one retry-with-backoff helper
    stopwatch.py      why a slow commit was slow

Settlement (the usage row, its charge, the open row deleted) is gateway/usage/writer.py, on the same helpers.
"""
