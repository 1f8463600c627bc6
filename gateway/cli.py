"""Command line: `python -m gateway serve | migrate`."""

from __future__ import annotations

import argparse
import logging

from gateway.settings import Settings


def _serve(settings: Settings) -> None:
    import uvicorn

    uvicorn.run(
        "gateway.app:create_app",
        factory=True,
        host=settings.server.host,
        port=settings.server.port,
        workers=settings.server.workers,
        log_level="info",
        access_log=False,
        timeout_graceful_shutdown=30,
    )


def _migrate(settings: Settings) -> None:
    from gateway.migrate import upgrade

    if not settings.database.url:
        raise SystemExit("DATABASE_URL is not set")
    upgrade(settings.database.url)
    print("database is at the latest migration")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gateway", description="The LoRA gateway.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the gateway (settings from the environment)")
    sub.add_parser("migrate", help="apply database migrations (alembic upgrade head)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    {"serve": _serve, "migrate": _migrate}[args.command](settings)


if __name__ == "__main__":
    main()
