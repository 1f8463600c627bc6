"""The dashboard's sign-in: an encrypted session cookie keyed by the admin token, and a per-session CSRF token.

The cookie is HttpOnly and SameSite=Strict, Secure when the request came over https. Its secret is derived
from GATEWAY_ADMIN_TOKEN, so rotating the token signs every browser out. Form posts carry the session's CSRF
token, compared in constant time; the Bearer JSON API never sees this cookie or needs a CSRF token.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
import time
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers import BaseRouteHandler
from litestar.middleware.session.client_side import ClientSideSessionBackend, CookieBackendConfig
from litestar.types import Message, ScopeSession

from gateway.settings import Settings

COOKIE = "gw_admin_session"
MAX_AGE_S = 8 * 3600
CSRF_FIELD = "csrf_token"


class SignInRequired(NotAuthorizedException):
    """No valid dashboard session; pages answer with a redirect to the sign-in form."""


class _SchemeAwareBackend(ClientSideSessionBackend):
    """Marks the cookie Secure exactly when the request came over https (directly or via trusted proxy headers)."""

    def __init__(self, config: CookieBackendConfig) -> None:
        super().__init__(config)
        self._https = ClientSideSessionBackend(dataclasses.replace(config, secure=True))

    def __deepcopy__(self, memo: dict[int, Any]) -> _SchemeAwareBackend:
        # Litestar deep-copies routers on registration; the cipher inside cannot be copied and holds no state.
        return self

    async def store_in_message(
        self, scope_session: ScopeSession, message: Message, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> None:
        if connection.scope.get("scheme") in ("https", "wss"):
            await self._https.store_in_message(scope_session, message, connection)
        else:
            await super().store_in_message(scope_session, message, connection)


@dataclasses.dataclass
class _SessionConfig(CookieBackendConfig):
    _backend_class = _SchemeAwareBackend


def session_config(settings: Settings) -> CookieBackendConfig:
    token = settings.admin.token
    # Without an admin token nobody can sign in; a random secret keeps the middleware well-formed.
    seed = token.get_secret_value().encode() if token is not None else secrets.token_bytes(32)
    secret = hashlib.sha256(b"lora-gateway dashboard session\0" + seed).digest()
    return _SessionConfig(secret=secret, key=COOKIE, max_age=MAX_AGE_S, path="/admin", httponly=True,
                          samesite="strict")  # fmt: skip


def token_matches(settings: Settings, candidate: str) -> bool:
    expected = settings.admin.token
    if expected is None or not candidate:
        return False
    return hmac.compare_digest(candidate.encode(), expected.get_secret_value().encode())


def start(connection: ASGIConnection[Any, Any, Any, Any]) -> None:
    """A fresh signed-in session with its own CSRF token."""
    connection.set_session({"admin": True, "csrf": secrets.token_urlsafe(32), "since": int(time.time())})


def end(connection: ASGIConnection[Any, Any, Any, Any]) -> None:
    connection.clear_session()


def _data(connection: ASGIConnection[Any, Any, Any, Any]) -> dict[str, Any]:
    """The session as a dict; empty when there is none or the cookie did not decrypt."""
    session = connection.scope.get("session")
    return session if isinstance(session, dict) else {}


def signed_in(connection: ASGIConnection[Any, Any, Any, Any]) -> bool:
    session = _data(connection)
    return bool(session.get("admin")) and time.time() - int(session.get("since", 0)) < MAX_AGE_S


def csrf_token(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    return str(_data(connection).get("csrf", ""))


def require_session(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard: pages redirect to sign-in (see the router's handler); form posts without a session get 403."""
    if signed_in(connection):
        return
    if connection.scope.get("method") == "GET":
        raise SignInRequired("Sign in to the dashboard.")
    raise PermissionDeniedException("Sign in to the dashboard first.")


def check_csrf(connection: ASGIConnection[Any, Any, Any, Any], form: dict[str, Any]) -> None:
    """403 unless the form carries this session's CSRF token."""
    sent = str(form.get(CSRF_FIELD) or "")
    expected = csrf_token(connection)
    if not sent or not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise PermissionDeniedException("The form's CSRF token is missing or wrong; reload the page and try again.")
