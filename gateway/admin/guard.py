"""Admin authentication: `Authorization: Bearer $GATEWAY_ADMIN_TOKEN`, never interchangeable with tenant keys."""

from __future__ import annotations

import hmac
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler

from gateway.auth.keys import bearer_token
from gateway.errors import AuthenticationFailed
from gateway.settings import Settings


def admin_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    settings: Settings = connection.app.state.settings
    expected = settings.admin.token
    if expected is None:
        raise AuthenticationFailed("The admin API is disabled: set GATEWAY_ADMIN_TOKEN.", code="admin_disabled")
    token = bearer_token(connection.headers.get("authorization"))
    if not token or not hmac.compare_digest(token.encode(), expected.get_secret_value().encode()):
        raise AuthenticationFailed("Invalid admin token.", code="invalid_admin_token")
