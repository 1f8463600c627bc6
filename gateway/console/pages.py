"""How a console page is rendered: the dashboard's look (its CSS and headers), the console's top bar."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.response import Template

from gateway.console import session
from gateway.dashboard.pages import HEADERS, STATIC


def page(
    request: Request[Any, Any, Any],
    template: str,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> Template:
    """A console page; every form adds `csrf_input` (Litestar's CSRF middleware checks it)."""
    who = request.scope.get("state", {}).get(f"principal:{session.COOKIE}")
    return Template(
        template_name=f"console/{template}",
        context={"static": STATIC, "who": who, "flash": who.flash if who else None, **context},
        status_code=status_code,
        headers={**HEADERS, **(headers or {})},
    )
