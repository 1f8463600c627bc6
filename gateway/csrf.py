"""CSRF protection of the browser's forms with Litestar's CSRFConfig (a signed double-submit cookie).

Everything is protected except the API paths below, which a browser's cookies never authenticate: Bearer keys
(/v1, /maas), the admin token (the admin API: /admin/… except the dashboard's pages), Stripe's signature
(/webhooks), and the probes. A new API path must be added here; forgetting it is loud (a 403 on every POST),
and tests/unit/test_csrf.py checks that the list splits the routes into API and browser pages as intended.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from pathlib import Path

from litestar.config.csrf import CSRFConfig
from litestar.middleware import DefineMiddleware
from litestar.middleware.csrf import CSRFMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from gateway.people.web import secure
from gateway.settings import SessionSettings, Settings

COOKIE = "gw_csrf"
FIELD = "_csrf_token"  # the form field Litestar reads (templates: {{ csrf_input|safe }})
API_PATHS = (
    r"^/v1(/|$)",
    r"^/maas/",
    r"^/webhooks/",
    r"^/admin/(?!login$|logout$|dashboard(/|$))",
    r"^/(healthz|readyz)$",
    r"^/schema(/|$)",
)


class _SchemeAwareCSRF(CSRFMiddleware):
    """Litestar's middleware, with the cookie's Secure flag decided per request (SESSION_COOKIE_SECURE=auto)."""

    def __init__(self, app: ASGIApp, config: CSRFConfig, sessions: SessionSettings) -> None:
        super().__init__(app, config)
        self._sessions = sessions
        self._secure = CSRFMiddleware(app, dataclasses.replace(config, cookie_secure=True))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if secure(scope, self._sessions) and not self.config.cookie_secure:
            await self._secure(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def csrf_config(settings: Settings) -> CSRFConfig:
    return CSRFConfig(
        secret=_secret(settings),
        cookie_name=COOKIE,
        cookie_httponly=True,  # pages put the token in their forms; no script reads it
        cookie_samesite="lax",
        cookie_secure=settings.sessions.cookie_secure == "true",
        exclude=list(API_PATHS),
    )


def csrf_middleware(settings: Settings) -> DefineMiddleware:
    return DefineMiddleware(_SchemeAwareCSRF, config=csrf_config(settings), sessions=settings.sessions)


def _secret(settings: Settings) -> str:
    """SESSION_SECRET, else one made once in the data folder and shared by every process (and replica) using it."""
    if settings.sessions.secret is not None:
        return settings.sessions.secret.get_secret_value()
    path = settings.storage.data_dir / "session-secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        _create_once(path, secrets.token_urlsafe(32))
    return path.read_text().strip()


def _create_once(path: Path, content: str) -> None:
    """Write `path` whole unless it exists: a private temporary file, hard-linked into place (atomic; the first
    process wins, the others read what it wrote)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(content)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
