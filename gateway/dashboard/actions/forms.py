"""What every dashboard action shares: who acts, parsing form fields, the flash-and-redirect after a change."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.response import Redirect
from sqlmodel.ext.asyncio.session import AsyncSession

from billing.errors import BillingError
from gateway.audit.service import Actor, client_ip
from gateway.dashboard import session
from gateway.errors import GatewayError, InvalidRequest
from gateway.http_errors import billing_status
from gateway.people import sessions, web
from gateway.people.sessions import Principal

# The typed errors a service may refuse a form with: shown on the page, never a 500.
REFUSALS = (GatewayError, BillingError)

TENANT_LIMITS = ("rpm_limit", "tpm_limit", "max_concurrent_requests",
                 "max_deployments", "max_adapter_bytes", "uploads_per_minute")  # fmt: skip
KEY_LIMITS = TENANT_LIMITS[:3]


async def operator(request: Request[Any, Any, Any]) -> tuple[Principal, Actor]:
    """The signed-in operator and how the audit log names it (`operator:<e-mail>`, or `admin` for the token)."""
    who = await web.current(session.AREA, request)
    assert who is not None  # the guards let only a signed-in operator through
    return who, Actor(who.actor, client_ip(request))


def refusal(exc: GatewayError | BillingError) -> dict[str, Any]:
    """Template context of a refused form: its message and HTTP status."""
    status = billing_status(exc) if isinstance(exc, BillingError) else exc.status_code
    return {"status_code": status, "action_error": exc.message}


async def done(db: AsyncSession, who: Principal, message: str, to: str) -> Redirect:
    """After a committed change: a flash message for the next page, and a redirect to it."""
    await sessions.set_flash(db, who.session_id, message)
    await db.commit()
    return Redirect(to, status_code=303)


def text(data: dict[str, str], field: str, what: str, *, required: bool = True, limit: int = 200) -> str:
    value = data.get(field, "").strip()
    if (required and not value) or len(value) > limit:
        raise InvalidRequest(f"{what} must be 1–{limit} characters.", param=field)
    return value


def integer(data: dict[str, str], field: str, what: str) -> int | None:
    """A whole number, or None for an empty field; the service checks its range."""
    value = data.get(field, "").strip().replace(",", "").replace("_", "")
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidRequest(f"{what} must be a whole number, not {value[:40]!r}.", param=field) from None


def required_integer(data: dict[str, str], field: str, what: str) -> int:
    value = integer(data, field, what)
    if value is None:
        raise InvalidRequest(f"Enter {what.lower()}.", param=field)
    return value


def limits(data: dict[str, str], fields: tuple[str, ...]) -> dict[str, int | None]:
    """Every limit field of the form: empty is null (a tenant's default; for a key, no limit of its own)."""
    return {f: integer(data, f, f) for f in fields}
