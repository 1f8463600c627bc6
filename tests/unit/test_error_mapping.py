"""Foreign errors (billing's tree, Litestar's own) answer through gateway/errors.py's tree, which alone carries
statuses, OpenAI types and codes: the answers are the ones clients and tests have always seen."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from litestar.exceptions import HTTPException, ValidationException

from billing.errors import (
    BillingError,
    InsufficientQuota,
    InvalidBillingInput,
    PaymentDeclined,
    StripeNotConfigured,
    StripeUnavailable,
    UnknownAccount,
)
from gateway import http_errors
from gateway.errors import GatewayError
from gateway.http_errors import from_billing, from_litestar, gateway_error_body


def answer(exc: GatewayError) -> tuple[int, dict[str, object]]:
    return exc.status_code, gateway_error_body(exc)["error"]


@pytest.mark.parametrize(
    ("error", "status", "type_", "code"),
    [
        (InsufficientQuota("out of tokens", param="max_tokens"), 429, "insufficient_quota", "insufficient_quota"),
        (UnknownAccount("no account", param="tenant_id"), 404, "invalid_request_error", "not_found"),
        (InvalidBillingInput("bad period", param="period"), 400, "invalid_request_error", "invalid_request"),
        (PaymentDeclined("Your card was declined."), 402, "card_error", "card_declined"),
        (PaymentDeclined("Your card has expired.", code="expired_card"), 402, "card_error", "expired_card"),
        (StripeNotConfigured("payments are off"), 404, "invalid_request_error", "stripe_not_configured"),
        (StripeUnavailable("Stripe is down"), 503, "server_error", "billing_unavailable"),
        (BillingError("anything else"), 503, "server_error", "billing_unavailable"),
    ],
)
def test_billing_errors(error: BillingError, status: int, type_: str, code: str) -> None:
    got_status, body = answer(from_billing(error))
    assert got_status == status
    assert body == {"message": error.message, "type": type_, "code": code, "param": error.param}


@pytest.mark.parametrize(
    ("status", "type_", "code"),
    [
        (400, "invalid_request_error", "invalid_request"),
        (401, "invalid_request_error", "invalid_api_key"),
        (403, "permission_error", "permission_denied"),
        (404, "invalid_request_error", "not_found"),
        (405, "invalid_request_error", "method_not_allowed"),
        (413, "invalid_request_error", "payload_too_large"),
        (415, "invalid_request_error", "unsupported_media_type"),
        (429, "rate_limit_error", "rate_limit_exceeded"),
        (408, "invalid_request_error", None),  # any other 4xx keeps its status
    ],
)
def test_litestar_errors_by_status(status: int, type_: str, code: str | None) -> None:
    got_status, body = answer(from_litestar(HTTPException(status_code=status, detail="told")))
    assert (got_status, body) == (status, {"message": "told", "type": type_, "code": code, "param": None})


def test_a_litestar_5xx_never_shows_its_detail() -> None:
    exc = from_litestar(HTTPException(status_code=503, detail="pool exhausted at 0x7f…"))
    assert answer(exc) == (503, {"message": http_errors._INTERNAL, "type": "server_error", "code": None,
                                 "param": None})  # fmt: skip


def test_a_validation_error_names_its_field() -> None:
    exc = ValidationException(
        detail="Validation failed for POST /v1/keys", extra=[{"key": "name", "message": "Field required"}]
    )
    assert answer(from_litestar(exc)) == (
        400,
        {"message": "Validation failed for POST /v1/keys: name: Field required", "type": "invalid_request_error",
         "code": "invalid_request", "param": "name"},
    )  # fmt: skip


def test_statuses_are_written_only_in_the_exception_tree() -> None:
    """http_errors.py maps foreign errors to gateway classes; it writes no OpenAI type or code of its own but the
    few codes a class's own does not fit (passed as `code=`)."""
    source = (Path(http_errors.__file__)).read_text()
    strings = {n.value for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    for type_ in ("invalid_request_error", "permission_error", "rate_limit_error", "insufficient_quota", "card_error"):
        assert type_ not in strings
