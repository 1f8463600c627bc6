"""Command line: `python -m gateway serve | migrate | trainer | billing … | operators …`."""

from __future__ import annotations

import argparse
import asyncio
import atexit
import logging
import os
import shutil
import sys
import tempfile
from typing import Any

from pydantic import ValidationError

from gateway.people import cli as operators
from gateway.settings import Settings


def _serve(settings: Settings, args: argparse.Namespace) -> None:
    import uvicorn

    if not settings.metrics.multiproc_dir:
        # prometheus-client shares every process's samples through files, set up before the workers (and before
        # prometheus_client is imported here: it picks its mode at import) so the metrics listener can sum them.
        # Its own folder per `serve`, never a shared one: two gateways on one host must not sum each other's.
        folder = tempfile.mkdtemp(prefix="gateway-prometheus-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
        settings.metrics.multiproc_dir = folder
    if settings.metrics.port:
        from gateway.metrics import start_listener

        start_listener(settings.metrics)
    server = settings.server
    uvicorn.run(
        "gateway.app:create_app",
        factory=True,
        host=server.host,
        port=server.port,
        workers=server.workers,
        log_level="info",
        access_log=False,
        timeout_keep_alive=server.keep_alive_s,
        timeout_graceful_shutdown=30,
        proxy_headers=True,
        forwarded_allow_ips=server.forwarded_allow_ips,
        limit_concurrency=server.limit_concurrency,
        h11_max_incomplete_event_size=server.max_header_bytes,
    )


def _migrate(settings: Settings, args: argparse.Namespace) -> None:
    from gateway.migrate import upgrade

    upgrade(_database_url(settings))
    print("database is at the latest migration")


def _database_url(settings: Settings) -> str:
    if not settings.database.url:
        raise SystemExit("DATABASE_URL is not set")
    return settings.database.url


async def _with_db(settings: Settings, work: object) -> object:
    from gateway import db

    engine = db.create_engine(settings.database)
    try:
        async with engine.begin() as conn:
            return await work(conn)  # type: ignore[operator]
    finally:
        await engine.dispose()


def _close_period(settings: Settings, args: argparse.Namespace) -> None:
    from billing import invoices

    _database_url(settings)
    closed = asyncio.run(_with_db(settings, lambda conn: invoices.close_period(conn, args.period)))
    assert isinstance(closed, list)
    for inv in closed:
        print(f"{inv['id']}  {inv['tenant_id']}  {inv['period']}  {inv['total_minor']} {inv['currency']} (minor units)")
    print(f"{len(closed)} invoices for {args.period}")


def _reconcile(settings: Settings, args: argparse.Namespace) -> None:
    from gateway.accounts.reconcile import reconcile, render

    _database_url(settings)
    stripe = None if args.no_stripe else settings.billing
    report = asyncio.run(_with_db(settings, lambda conn: reconcile(conn, stripe)))
    assert isinstance(report, list)
    print(render(report))
    if any(r.problems for r in report):
        sys.exit(1)


def _sync_stripe(settings: Settings, args: argparse.Namespace) -> None:
    from billing.stripe_sync import sync_once
    from gateway import db

    _database_url(settings)

    async def run() -> object:
        engine = db.create_engine(settings.database)
        try:
            return await sync_once(engine, settings.billing)
        finally:
            await engine.dispose()

    report: Any = asyncio.run(run())
    for invoice_id in report.synced:
        print(f"sent {invoice_id} to Stripe")
    for invoice_id, error in report.failed.items():
        print(f"FAILED {invoice_id}: {error} (retried later with backoff)")
    print(f"{len(report.synced)} sent, {len(report.failed)} failed")
    if report.failed:
        sys.exit(1)


def settings_or_exit() -> Settings:
    """The settings, or exit with one line per wrong one (never a traceback, never the rejected value)."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            problems.append(message if message.startswith(where) else f"{where}: {message}")
        raise SystemExit("invalid setting: " + "; ".join(problems)) from None


def _trainer(settings: Settings, args: argparse.Namespace) -> None:
    from gateway.trainer.worker import main as run_trainer

    _database_url(settings)
    run_trainer(settings, args.device)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gateway", description="The LoRA gateway.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the gateway (settings from the environment)").set_defaults(run=_serve)
    sub.add_parser("migrate", help="apply database migrations (alembic upgrade head)").set_defaults(run=_migrate)
    trainer = sub.add_parser("trainer", help="run a fine-tuning worker (takes jobs from the database queue)")
    trainer.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to train (default: cpu)")
    trainer.set_defaults(run=_trainer)
    billing = sub.add_parser("billing", help="operator commands for billing").add_subparsers(
        dest="billing", required=True
    )
    close = billing.add_parser("close-period", help="invoice every tenant for a month (idempotent)")
    close.add_argument("period", help="YYYY-MM")
    close.set_defaults(run=_close_period)
    rec = billing.add_parser(
        "reconcile", help="usage vs charged vs invoiced tokens vs Stripe per tenant; exit 1 on any difference"
    )
    rec.add_argument("--no-stripe", action="store_true", help="do not compare with Stripe even if configured")
    rec.set_defaults(run=_reconcile)
    billing.add_parser(
        "sync-stripe", help="send closed invoices waiting in the outbox to Stripe (one pass)"
    ).set_defaults(run=_sync_stripe)
    operators.add_parsers(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args.run(settings_or_exit(), args)


if __name__ == "__main__":
    main()
