"""The gateway's one exception tree: what a client may see, with its status, OpenAI type and code.

GatewayError                       any error a client may see
├── InvalidRequest          400    malformed JSON, missing or wrong fields
├── AuthenticationFailed    401    no key, unknown key, revoked key, bad admin token
├── CardDeclined            402    the card was declined (Stripe's decline code)
├── PermissionDenied        403    the caller is known but may not do this
├── NotFound                404    unknown model/adapter/tenant/key — or someone else's
│   └── NotEnabled          404    a feature this gateway is not configured for (payments without Stripe)
├── MethodNotAllowed        405
├── Conflict                409    a name already taken
├── LengthRequired          411    an upload without Content-Length
├── PayloadTooLarge         413
├── UnsupportedMediaType    415
├── Unprocessable           422    well-formed but unacceptable (e.g. a bad adapter)
├── RateLimited             429
├── QuotaExceeded           429    trial tokens and credit cannot cover the request
├── BillingUnavailable      503    Stripe unreachable or not configured
├── EngineError                    the engine is the cause (raised only by gateway.engine)
│   ├── EngineRejected      4xx    the engine refused the request; its message is passed on
│   ├── EngineFailed        502    the engine answered with a 5xx or garbage
│   ├── EngineUnavailable   503    cannot connect
│   └── EngineTimeout       504
└── DatabaseUnavailable     503    cannot meter, so we do not serve

Plain data, no imports of the web or the database (like httpx's `_exceptions.py`), and the only place where a
status, OpenAI type and code are written down. Lower-level errors are translated into this tree at their
boundary: gateway/db.py the driver's (`db_errors`), gateway/engine/client.py the engine's, gateway/http_errors.py
billing's own tree (billing/errors.py; billing never imports the gateway) and Litestar's, before it turns any of
them into an OpenAI-shaped answer.
"""

from __future__ import annotations

from typing import Any


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


class CardDeclined(GatewayError):
    status_code = 402
    type = "card_error"
    code = "card_declined"


class PermissionDenied(GatewayError):
    status_code = 403
    type = "permission_error"
    code = "permission_denied"


class NotFound(GatewayError):
    status_code = 404
    type = "invalid_request_error"
    code = "not_found"


class NotEnabled(NotFound):
    code = "not_enabled"


class MethodNotAllowed(GatewayError):
    status_code = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


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


class UnsupportedMediaType(GatewayError):
    status_code = 415
    type = "invalid_request_error"
    code = "unsupported_media_type"


class Unprocessable(GatewayError):
    status_code = 422
    type = "invalid_request_error"
    code = "unprocessable"


class RateLimited(GatewayError):
    status_code = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class QuotaExceeded(GatewayError):
    status_code = 429
    type = "insufficient_quota"
    code = "insufficient_quota"


class BillingUnavailable(GatewayError):
    status_code = 503
    type = "server_error"
    code = "billing_unavailable"


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
