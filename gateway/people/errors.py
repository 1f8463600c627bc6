"""Errors of signing in and managing users: members of the gateway's one tree (gateway/errors.py)."""

from __future__ import annotations

import math

from gateway.errors import AuthenticationFailed, Conflict, InvalidRequest, PermissionDenied, RateLimited


class InvalidCredentials(AuthenticationFailed):
    """Unknown e-mail, wrong password or wrong admin token: deliberately the same answer for each."""

    code = "invalid_credentials"


class AccountDisabled(PermissionDenied):
    code = "account_disabled"


class WrongAccountKind(PermissionDenied):
    """A tenant user at the operators' door, or the other way round (said only once the password was right)."""

    code = "wrong_account_kind"


class SignInThrottled(RateLimited):
    """Too many recent failed sign-ins for this account or from this address."""

    code = "signin_throttled"

    def __init__(self, retry_after_s: float) -> None:
        self.retry_after_s = max(1, math.ceil(retry_after_s))
        minutes = math.ceil(self.retry_after_s / 60)
        super().__init__(
            f"Too many failed sign-ins. Try again in {minutes} minute{'s' if minutes != 1 else ''}.",
            headers={"Retry-After": str(self.retry_after_s)},
        )


class WeakPassword(InvalidRequest):
    code = "weak_password"


class InvalidEmail(InvalidRequest):
    code = "invalid_email"


class EmailTaken(Conflict):
    code = "email_taken"


class SignupClosed(PermissionDenied):
    code = "signup_closed"


class SignupThrottled(RateLimited):
    """Too many sign-ups from this address in the last hour."""

    code = "signup_throttled"

    def __init__(self, retry_after_s: int = 3600) -> None:
        super().__init__("Too many sign-ups from your address. Try again later.",
                         headers={"Retry-After": str(retry_after_s)})  # fmt: skip


class TenantNotActive(PermissionDenied):
    """A console user whose tenant is pending, rejected or suspended: told which, and not signed in."""

    code = "account_not_active"
