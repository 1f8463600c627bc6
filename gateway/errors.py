"""The gateway's one exception tree, and the one place that turns it into OpenAI-shaped JSON.

GatewayError                       any error a client may see
├── InvalidRequest          400    malformed JSON, missing or wrong fields
├── AuthenticationFailed    401    no key, unknown key, revoked key, bad admin token
├── PermissionDenied        403    the caller is known but may not do this
├── NotFound                404    unknown model/adapter/tenant/key — or someone else's
├── Conflict                409    a name already taken
├── LengthRequired          411    an upload without Content-Length
├── PayloadTooLarge         413
├── Unprocessable           422    well-formed but unacceptable (e.g. a bad adapter)
├── RateLimited             429
├── EngineError                    the engine is the cause (raised only by gateway.engine)
│   ├── EngineRejected      4xx    the engine refused the request; its message is passed on
│   ├── EngineFailed        502    the engine answered with a 5xx or garbage
│   ├── EngineUnavailable   503    cannot connect
│   └── EngineTimeout       504
└── DatabaseUnavailable     503    cannot meter, so we do not serve
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException

from billing.errors import (
    BillingError,
    InsufficientQuota,
    InvalidBillingInput,
    PaymentDeclined,
    StripeNotConfigured,
    UnknownAccount,
)

log = logging.getLogger(__name__)


class GatewayError(Exception):
    status_code = 500
    type = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        status_code: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code
        self.param = param
        self.headers = headers or {}


class InvalidRequest(GatewayError):
    status_code = 400
    type = "invalid_request_error"


class AuthenticationFailed(GatewayError):
    status_code = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status_code = 403
    type = "permission_error"
    code = "permission_denied"


class NotFound(GatewayError):
    status_code = 404
    type = "invalid_request_error"
    code = "not_found"


class Conflict(GatewayError):
    status_code = 409
    type = "invalid_request_error"
    code = "conflict"


class LengthRequired(GatewayError):
    status_code = 411
    type = "invalid_request_error"
    code = "length_required"


class PayloadTooLarge(GatewayError):
    status_code = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class Unprocessable(GatewayError):
    status_code = 422
    type = "invalid_request_error"
    code = "unprocessable"


class RateLimited(GatewayError):
    status_code = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class EngineError(GatewayError):
    status_code = 502
    type = "server_error"
    code: str | None = "engine_error"


class EngineRejected(EngineError):
    status_code = 400
    type = "invalid_request_error"
    code: str | None = None


class EngineFailed(EngineError):
    status_code = 502
    code: str | None = "engine_error"


class EngineUnavailable(EngineError):
    status_code = 503
    code = "engine_unavailable"

    def __init__(self, message: str = "The model engine is unavailable; retry shortly.", **kw: Any) -> None:
        kw.setdefault("headers", {"Retry-After": "5"})
        super().__init__(message, **kw)


class EngineTimeout(EngineError):
    status_code = 504
    code = "engine_timeout"


class DatabaseUnavailable(GatewayError):
    status_code = 503
    type = "server_error"
    code = "database_unavailable"

    def __init__(self, message: str = "Usage metering is unavailable; retry shortly.", **kw: Any) -> None:
        kw.setdefault("headers", {"Retry-After": "5"})
        super().__init__(message, **kw)


def billing_error_handler(request: Request[Any, Any, Any], exc: BillingError) -> Response[Any]:
    """Billing raises its own errors (it never imports the gateway); they become HTTP here."""
    if isinstance(exc, InsufficientQuota):
        status, type_, code = 429, "insufficient_quota", "insufficient_quota"
    elif isinstance(exc, UnknownAccount):
        status, type_, code = 404, "invalid_request_error", "not_found"
    elif isinstance(exc, InvalidBillingInput):
        status, type_, code = 400, "invalid_request_error", "invalid_request"
    elif isinstance(exc, PaymentDeclined):
        status, type_, code = 402, "card_error", exc.code
    elif isinstance(exc, StripeNotConfigured):
        status, type_, code = 503, "server_error", "stripe_not_configured"
    else:
        status, type_, code = 503, "server_error", "billing_unavailable"
    return _json(status, error_body(exc.message, type_, code, exc.param))


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """The OpenAI error envelope."""
    return {"error": {"message": message, "type": type_, "code": code, "param": param}}


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response[Any]:
    return Response(content=body, status_code=status, media_type=MediaType.JSON, headers=headers)


_STATUS_TYPES = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", "permission_denied"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "payload_too_large"),
    415: ("invalid_request_error", "unsupported_media_type"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}


def gateway_error_handler(_: Request[Any, Any, Any], exc: GatewayError) -> Response[Any]:
    if exc.status_code >= 500:
        log.warning("%s: %s", type(exc).__name__, exc.message)
    return _json(exc.status_code, error_body(exc.message, exc.type, exc.code, exc.param), exc.headers)


def http_exception_handler(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """Litestar's own errors (routing, validation, body size) in OpenAI's shape."""
    status = exc.status_code
    type_, code = _STATUS_TYPES.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
    message = exc.detail or "Request failed"
    param = None
    if isinstance(exc, ValidationException):
        status, type_, code = 400, "invalid_request_error", "invalid_request"
        extra = exc.extra if isinstance(exc.extra, list) else []
        if extra and isinstance(extra[0], dict):
            param = str(extra[0].get("key") or "") or None
            detail = extra[0].get("message")
            message = f"{message}: {param}: {detail}" if param and detail else message
    if status >= 500:
        message = "The server had an error while processing your request."
    return _json(status, error_body(message, type_, code, param), dict(exc.headers or {}))


def unexpected_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Last resort: an unreachable database is a 503 (we cannot meter, so we do not serve); anything else is
    a bug — log the trace, never show it."""
    from gateway.db import is_unavailable  # errors.py is imported by db.py

    if is_unavailable(exc):
        return gateway_error_handler(request, DatabaseUnavailable())
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    body = error_body("The server had an error while processing your request.", "server_error", "internal_error")
    return _json(500, body)


EXCEPTION_HANDLERS: dict[Any, Any] = {
    GatewayError: gateway_error_handler,
    BillingError: billing_error_handler,
    HTTPException: http_exception_handler,
    Exception: unexpected_error_handler,
}
