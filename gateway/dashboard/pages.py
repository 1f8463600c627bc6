"""How a dashboard page is rendered: its template context (who is signed in, what they may do) and headers."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Template

from gateway.dashboard import session
from gateway.people.roles import Permission, allows

STATIC = "/admin/dashboard/static"
Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]
HEADERS = {
    # Scripts and styles only from our own static files; no framing (the revoke button), no referrer, no caching.
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


def page(
    request: Request[Any, Any, Any],
    name: str,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> Template:
    """A dashboard page. `who` (the signed-in principal, once a guard or the sign-in form looked it up) decides the
    top bar and which write buttons show; every form adds `csrf_input` (Litestar's CSRF middleware checks it)."""
    who = request.scope.get("state", {}).get(f"principal:{session.COOKIE}")
    return Template(
        template_name=name,
        context={"static": STATIC, "who": who, "flash": who.flash if who else None,
                 "can_manage": bool(who and allows(who.role, Permission.MANAGE)),
                 "can_bill": bool(who and allows(who.role, Permission.BILLING)),
                 "can_operators": bool(who and allows(who.role, Permission.OPERATORS)), **context},
        status_code=status_code,
        headers={**HEADERS, **(headers or {})},
    )  # fmt: skip
