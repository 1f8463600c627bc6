"""The HTTP boundary of both error trees (gateway/errors.py, billing/errors.py): the one body builder, the one
mapping of errors to status/type/code, and the exception handlers that use them."""

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
from gateway.db import is_unavailable
from gateway.errors import DatabaseUnavailable, GatewayError

log = logging.getLogger(__name__)

# What is not a GatewayError (which carries its own status, type and code) as (status, type, code): billing's
# errors (billing never imports the gateway), and Litestar's own by status.
_BILLING: dict[type[BillingError], tuple[int, str, str]] = {
    InsufficientQuota: (429, "insufficient_quota", "insufficient_quota"),
    UnknownAccount: (404, "invalid_request_error", "not_found"),
    InvalidBillingInput: (400, "invalid_request_error", "invalid_request"),
    PaymentDeclined: (402, "card_error", "card_declined"),  # Stripe's decline code, when it gives one, wins
    StripeNotConfigured: (503, "server_error", "stripe_not_configured"),
}
_BILLING_OTHER = (503, "server_error", "billing_unavailable")  # Stripe errors, which should not reach a client
_LITESTAR: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", "permission_denied"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "payload_too_large"),
    415: ("invalid_request_error", "unsupported_media_type"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}
_INTERNAL = "The server had an error while processing your request."


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """The OpenAI error envelope (JSON answers and server-sent events alike)."""
    return {"error": {"message": message, "type": type_, "code": code, "param": param}}


def gateway_error_body(exc: GatewayError) -> dict[str, Any]:
    return error_body(exc.message, exc.type, exc.code, exc.param)


def billing_status(exc: BillingError) -> tuple[int, str, str]:
    """(status, type, code) of a billing error."""
    for cls in type(exc).__mro__:
        if cls in _BILLING:
            return _BILLING[cls]
    return _BILLING_OTHER


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response[Any]:
    return Response(content=body, status_code=status, media_type=MediaType.JSON, headers=headers)


def gateway_error_handler(_: Request[Any, Any, Any], exc: GatewayError) -> Response[Any]:
    if exc.status_code >= 500:
        log.warning("%s: %s", type(exc).__name__, exc.message)
    return _json(exc.status_code, gateway_error_body(exc), exc.headers)


def billing_error_handler(_: Request[Any, Any, Any], exc: BillingError) -> Response[Any]:
    status, type_, code = billing_status(exc)
    if isinstance(exc, PaymentDeclined):
        code = exc.code or code
    return _json(status, error_body(exc.message, type_, code, exc.param))


def http_exception_handler(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """Litestar's own errors (routing, validation, body size) in OpenAI's shape."""
    status = exc.status_code
    type_, code = _LITESTAR.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
    message = exc.detail or "Request failed"
    param = None
    if isinstance(exc, ValidationException):
        status, (type_, code) = 400, _LITESTAR[400]
        extra = exc.extra if isinstance(exc.extra, list) else []
        if extra and isinstance(extra[0], dict):
            param = str(extra[0].get("key") or "") or None
            detail = extra[0].get("message")
            message = f"{message}: {param}: {detail}" if param and detail else message
    if status >= 500:
        message = _INTERNAL
    return _json(status, error_body(message, type_, code, param), dict(exc.headers or {}))


def unexpected_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Last resort: an unreachable database is a 503 (we cannot meter, so we do not serve); anything else is
    a bug — log the trace, never show it."""
    if is_unavailable(exc):
        return gateway_error_handler(request, DatabaseUnavailable())
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _json(500, error_body(_INTERNAL, "server_error", "internal_error"))


EXCEPTION_HANDLERS: dict[Any, Any] = {
    GatewayError: gateway_error_handler,
    BillingError: billing_error_handler,
    HTTPException: http_exception_handler,
    Exception: unexpected_error_handler,
}
