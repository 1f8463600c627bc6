"""Admin API request and response bodies (never the ORM tables themselves)."""

from __future__ import annotations

from datetime import datetime

import msgspec


class TenantCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    billing_mode: str | None = None  # prepaid | postpaid; default from BILLING_DEFAULT_MODE
    trial_tokens: int | None = None  # default from BILLING_TRIAL_TOKENS


class TenantPublic(msgspec.Struct):
    id: str
    name: str
    created_at: datetime
    billing_mode: str
    trial_tokens: int


class LimitFields(msgspec.Struct, forbid_unknown_fields=True):
    """Rate limits: absent = unchanged, null = unlimited (for a key; a tenant's null is the default)."""

    rpm_limit: int | msgspec.UnsetType | None = msgspec.UNSET
    tpm_limit: int | msgspec.UnsetType | None = msgspec.UNSET
    max_concurrent_requests: int | msgspec.UnsetType | None = msgspec.UNSET

    def limit_changes(self) -> dict[str, int | None]:
        return {
            k: v
            for k in ("rpm_limit", "tpm_limit", "max_concurrent_requests")
            if (v := getattr(self, k)) is not msgspec.UNSET
        }


class KeyCreate(LimitFields, forbid_unknown_fields=True):
    name: str = ""
    expires_at: datetime | None = None


class KeyPatch(LimitFields, forbid_unknown_fields=True):
    name: str | None = None


class TenantPatch(LimitFields, forbid_unknown_fields=True):
    """A tenant's limits: absent = unchanged, null = the TENANT_* default, 0 = unlimited."""

    name: str | None = None
    suspended: bool | None = None
    max_deployments: int | msgspec.UnsetType | None = msgspec.UNSET
    max_adapter_bytes: int | msgspec.UnsetType | None = msgspec.UNSET
    uploads_per_minute: int | msgspec.UnsetType | None = msgspec.UNSET

    def limit_changes(self) -> dict[str, int | None]:
        changes = super().limit_changes()
        for k in ("max_deployments", "max_adapter_bytes", "uploads_per_minute"):
            if (v := getattr(self, k)) is not msgspec.UNSET:
                changes[k] = v
        return changes


class KeyCreated(msgspec.Struct):
    id: str
    tenant_id: str
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    key: str  # shown exactly once


class AdapterRegister(msgspec.Struct, forbid_unknown_fields=True):
    """Register an adapter folder that is already on the gateway's disk (seeding; tenants upload instead)."""

    name: str
    path: str


class AdapterPublic(msgspec.Struct):
    id: str
    tenant_id: str
    name: str
    base_model: str
    status: str
    status_reason: str | None
    rank: int
    created_at: datetime
