"""`python -m gateway operators create | list | reset-password | disable | enable`: operator users from a shell.

Passwords come from a prompt (asked twice) or, with --password-stdin, from the first line of standard input;
never from an argument, which other users of the machine could read in the process list.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.audit import service as audit
from gateway.audit.service import Actor
from gateway.errors import GatewayError
from gateway.people import service as people
from gateway.people.models import OperatorRole, User
from gateway.settings import Settings

ACTOR = "cli"


def add_parsers(sub: Any) -> None:
    ops = sub.add_parser("operators", help="operator users of the admin dashboard").add_subparsers(
        dest="operators", required=True
    )
    create = ops.add_parser("create", help="create an operator user")
    create.add_argument("--email", required=True)
    create.add_argument("--name", required=True)
    create.add_argument("--role", choices=[r.value for r in OperatorRole], default=OperatorRole.VIEWER.value,
                        help="owner: everything; billing: read, credit, close periods; viewer: read only "
                        "(default)")  # fmt: skip
    create.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    create.set_defaults(run=_create)
    ops.add_parser("list", help="list operator users").set_defaults(run=_list)
    reset = ops.add_parser("reset-password", help="set an operator's password (signs it out everywhere)")
    reset.add_argument("--email", required=True)
    reset.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    reset.set_defaults(run=_reset)
    for name, run, text in (("disable", _disable, "stop an operator signing in (and end its sessions)"),
                            ("enable", _enable, "let a disabled operator sign in again")):  # fmt: skip
        p = ops.add_parser(name, help=text)
        p.add_argument("--email", required=True)
        p.set_defaults(run=run)


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password (at least 12 characters): ")
    if getpass.getpass("Password again: ") != first:
        raise SystemExit("the two passwords differ")
    return first


def _run(settings: Settings, work: Callable[[AsyncSession], Awaitable[str]]) -> None:
    """Run `work` in one session and print what it returns; a refusal (taken e-mail, weak password …) is one line
    and exit status 1."""
    from gateway import db

    if not settings.database.url:
        raise SystemExit("DATABASE_URL is not set")

    async def run() -> str:
        engine = db.create_engine(settings.database)
        try:
            async with db.session_factory(engine)() as session:
                return await work(session)
        finally:
            await engine.dispose()

    try:
        print(asyncio.run(run()))
    except GatewayError as exc:
        raise SystemExit(f"refused: {exc.message}") from None


async def _by_email(session: AsyncSession, email: str) -> User:
    user = await people.find_by_email(session, email)
    if user is None or not user.is_operator:
        raise GatewayError(f"no operator with the e-mail {email}")
    return user


async def _commit_audited(session: AsyncSession, action: str, target: str, detail: dict[str, Any]) -> None:
    """The change and its audit row, one commit."""
    await audit.record(await session.connection(), Actor(ACTOR), action, target, detail)
    await session.commit()


def _create(settings: Settings, args: argparse.Namespace) -> None:
    password = _password(args)

    async def work(session: AsyncSession) -> str:
        user = await people.create_operator(session, email=args.email, name=args.name, password=password,
                                            role=args.role)  # fmt: skip
        await _commit_audited(session, "operator.create", user.id, {"email": user.email, "role": user.role})
        return f"{user.id}  {user.email}  {user.role}"

    _run(settings, work)


def _list(settings: Settings, args: argparse.Namespace) -> None:
    async def work(session: AsyncSession) -> str:
        rows = await people.list_operators(session)
        lines = [f"{u.id}  {u.email}  {u.role:<8} {u.name}{'  (disabled)' if u.disabled_at else ''}" for u in rows]
        return "\n".join([*lines, f"{len(rows)} operator{'s' if len(rows) != 1 else ''}"])

    _run(settings, work)


def _reset(settings: Settings, args: argparse.Namespace) -> None:
    password = _password(args)

    async def work(session: AsyncSession) -> str:
        user = await people.reset_password(session, (await _by_email(session, args.email)).id, password)
        await _commit_audited(session, "user.password_reset", user.id, {"email": user.email})
        return f"new password set for {user.email}; its sessions are signed out"

    _run(settings, work)


def _disable(settings: Settings, args: argparse.Namespace) -> None:
    async def work(session: AsyncSession) -> str:
        user = await people.disable(session, (await _by_email(session, args.email)).id)
        await _commit_audited(session, "user.disable", user.id, {"email": user.email})
        return f"{user.email} is disabled; its sessions are signed out"

    _run(settings, work)


def _enable(settings: Settings, args: argparse.Namespace) -> None:
    async def work(session: AsyncSession) -> str:
        user = await people.enable(session, (await _by_email(session, args.email)).id)
        await _commit_audited(session, "user.enable", user.id, {"email": user.email})
        return f"{user.email} may sign in again"

    _run(settings, work)
