"""The HTTP boundary: foreign errors (billing's tree, Litestar's own) translated into gateway/errors.py's tree,
which alone carries statuses, types and codes; the one body builder; the exception handlers that use them."""

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
from gateway.errors import (
    AuthenticationFailed,
    BillingUnavailable,
    CardDeclined,
    DatabaseUnavailable,
    GatewayError,
    InvalidRequest,
    MethodNotAllowed,
    NotEnabled,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    QuotaExceeded,
    RateLimited,
    UnsupportedMediaType,
)

log = logging.getLogger(__name__)

# The one translation table: a foreign error becomes this gateway error (with its message and param), and the
# code given here where the class's own does not fit. Billing errors by class (the nearest in the MRO wins; any
# other — Stripe's — is BillingUnavailable), Litestar's by status (any other: a bare 4xx/5xx of that status).
_BILLING: dict[type[BillingError], tuple[type[GatewayError], str | None]] = {
    InsufficientQuota: (QuotaExceeded, None),
    UnknownAccount: (NotFound, None),
    InvalidBillingInput: (InvalidRequest, "invalid_request"),
    PaymentDeclined: (CardDeclined, None),
    # A permanent state, not an outage: a 5xx would have SDKs retry it (they retry 5xx on their own)
    StripeNotConfigured: (NotEnabled, "stripe_not_configured"),
}
_LITESTAR: dict[int, tuple[type[GatewayError], str | None]] = {
    400: (InvalidRequest, "invalid_request"),
    401: (AuthenticationFailed, None),
    403: (PermissionDenied, None),
    404: (NotFound, None),
    405: (MethodNotAllowed, None),
    413: (PayloadTooLarge, None),
    415: (UnsupportedMediaType, None),
    429: (RateLimited, None),
}
_INTERNAL = "The server had an error while processing your request."


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """The OpenAI error envelope (JSON answers and server-sent events alike)."""
    return {"error": {"message": message, "type": type_, "code": code, "param": param}}


def gateway_error_body(exc: GatewayError) -> dict[str, Any]:
    return error_body(exc.message, exc.type, exc.code, exc.param)


def from_billing(exc: BillingError) -> GatewayError:
    """The gateway error a billing error answers as."""
    cls, code = next((_BILLING[c] for c in type(exc).__mro__ if c in _BILLING), (BillingUnavailable, None))
    if isinstance(exc, PaymentDeclined):
        code = exc.code or None  # Stripe's decline code, when it gives one
    return cls(exc.message, code=code, param=exc.param)


def from_litestar(exc: HTTPException) -> GatewayError:
    """The gateway error one of Litestar's own (routing, validation, body size) answers as."""
    status, message, param = exc.status_code, exc.detail or "Request failed", None
    if isinstance(exc, ValidationException):
        status = 400
        extra = exc.extra if isinstance(exc.extra, list) else []
        if extra and isinstance(extra[0], dict):
            param = str(extra[0].get("key") or "") or None
            detail = extra[0].get("message")
            message = f"{message}: {param}: {detail}" if param and detail else message
    headers = dict(exc.headers or {})
    if status in _LITESTAR:
        cls, code = _LITESTAR[status]
        return cls(message, code=code, param=param, headers=headers)
    if status >= 500:
        return GatewayError(_INTERNAL, status_code=status, headers=headers)
    return InvalidRequest(message, status_code=status, param=param, headers=headers)


def billing_status(exc: BillingError) -> int:
    """The HTTP status a billing error answers with."""
    return from_billing(exc).status_code


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response[Any]:
    return Response(content=body, status_code=status, media_type=MediaType.JSON, headers=headers)


def gateway_error_handler(_: Request[Any, Any, Any], exc: GatewayError) -> Response[Any]:
    if exc.status_code >= 500:
        log.warning("%s: %s", type(exc).__name__, exc.message)
    return _json(exc.status_code, gateway_error_body(exc), exc.headers)


def billing_error_handler(request: Request[Any, Any, Any], exc: BillingError) -> Response[Any]:
    return gateway_error_handler(request, from_billing(exc))


def http_exception_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    return gateway_error_handler(request, from_litestar(exc))


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
