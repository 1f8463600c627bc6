"""Tenants and keys: create, revoke (in the caller's transaction: gateway/admin/service.py commits the change with
its audit row), and authenticate a bearer key. Knows nothing of HTTP."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway import ids
from gateway.admission.limits import Limits
from gateway.auth.keys import KEY_PREFIX, bearer_token, display_prefix, generate_key, hash_key
from gateway.auth.models import ALL_SCOPES, ApiKey, Scope, Tenant, TenantStatus
from gateway.cache import Invalidations, TtlCache
from gateway.db import db_errors, guarded
from gateway.errors import AuthenticationFailed, Conflict, InvalidRequest, NotFound, PermissionDenied
from gateway.settings import TenantDefaults
from gateway.timeutil import utcnow

_KEYS = ApiKey.__table__  # type: ignore[attr-defined]
_TENANTS = Tenant.__table__  # type: ignore[attr-defined]
_LOOKUP = (
    sa.select(
        _KEYS.c.id,
        _KEYS.c.tenant_id,
        _KEYS.c.expires_at,
        _TENANTS.c.suspended_at,
        _TENANTS.c.suspended_reason,
        _TENANTS.c.status,
        _KEYS.c.scopes,
        _KEYS.c.rpm_limit.label("k_rpm"),
        _KEYS.c.tpm_limit.label("k_tpm"),
        _KEYS.c.max_concurrent_requests.label("k_conc"),
        _TENANTS.c.rpm_limit.label("t_rpm"),
        _TENANTS.c.tpm_limit.label("t_tpm"),
        _TENANTS.c.max_concurrent_requests.label("t_conc"),
    )
    .join(_TENANTS, _TENANTS.c.id == _KEYS.c.tenant_id)
    .where(_KEYS.c.key_hash == sa.bindparam("h"), _KEYS.c.revoked_at.is_(None))
)


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated tenant API key."""

    key_id: str
    tenant_id: str
    limits: tuple[Limits, ...] = ()
    scopes: frozenset[str] = frozenset(ALL_SCOPES)
    source: str = "api"  # "playground": the console's playground, marked so in the usage rows

    def require(self, scope: Scope) -> None:
        """PermissionDenied unless the key was given `scope` (a leaked inference key cannot mint keys)."""
        if scope.value not in self.scopes:
            raise PermissionDenied(
                f"This API key lacks the {scope.value!r} scope. Use a key created with it.", code="missing_scope"
            )


_SUSPENDED = "This account is suspended: its API keys cannot be used. Contact the operator."
_SUSPENDED_BECAUSE = {  # tenants.suspended_reason → what the tenant is told (gateway/payments/dunning.py)
    "invoice_overdue": "This account is suspended because an invoice is overdue. Pay it from the link in Stripe's "
    "invoice e-mail or on the console's Billing page (GET /v1/invoices lists it); access resumes as soon as it is "
    "paid.",
}
_BAD_KEY = "Incorrect API key provided. You can find your API key in your account settings."


class KeyCache:
    """Live keys by hash, with the key's expiry as a Unix time (None: never). Only keys that authenticated are
    kept; a revoked key, a suspended tenant or a limit change drops them in every process (gateway/cache.py),
    and the open-request insert checks the key again in the admission transaction."""

    def __init__(self, channel: Invalidations, ttl_s: float) -> None:
        self.entries: TtlCache[tuple[Caller, float | None]] = TtlCache(channel, ttl_s)
        channel.subscribe(self._drop)

    def _drop(self, kind: str, ident: str) -> None:
        if kind == "key":
            self.entries.drop(lambda e: e[0].key_id != ident)
        elif kind == "tenant":
            self.entries.drop(lambda e: e[0].tenant_id != ident)
        elif kind == "*":
            self.entries.drop()


async def authenticate(
    db: AsyncEngine,
    authorization: str | None,
    cache: KeyCache | None = None,
    *,
    defaults: TenantDefaults,
    overdue_ok: bool = False,
) -> Caller:
    """Resolve an `Authorization: Bearer sk-…` header to its live key, or raise AuthenticationFailed. The
    tenant's limits are its own where set, else `defaults` (a key's unset limit is no limit of the key's).
    `overdue_ok`: a tenant suspended for an overdue invoice still reaches the routes where it pays."""
    token = bearer_token(authorization)
    if not token:
        raise AuthenticationFailed(
            "You didn't provide an API key. Send it as 'Authorization: Bearer sk-…'.", code="missing_api_key"
        )
    if not token.startswith(KEY_PREFIX):
        raise AuthenticationFailed(_BAD_KEY)
    key_hash = hash_key(token)
    if cache is not None:
        hit = cache.entries.get(key_hash)
        if hit is not None and (hit[1] is None or hit[1] > time.time()):
            return hit[0]
        generation = cache.entries.token()
    caller, expires_at = await _resolve(db, key_hash, defaults, overdue_ok=overdue_ok and cache is None)
    if cache is not None:
        expires = expires_at.timestamp() if expires_at is not None else None
        cache.entries.put(key_hash, (caller, expires), generation)
    return caller


async def _resolve(
    db: AsyncEngine, key_hash: str, defaults: TenantDefaults, *, overdue_ok: bool = False
) -> tuple[Caller, datetime | None]:
    """The live key with this hash, as a Caller, and its expiry; AuthenticationFailed or PermissionDenied."""
    async with guarded(), db.connect() as conn:
        row = (await conn.execute(_LOOKUP, {"h": key_hash})).first()
    if row is None or (row.expires_at is not None and row.expires_at <= utcnow()):
        raise AuthenticationFailed(_BAD_KEY)
    if row.suspended_at is not None and not (overdue_ok and row.suspended_reason == "invoice_overdue"):
        raise PermissionDenied(_SUSPENDED_BECAUSE.get(row.suspended_reason, _SUSPENDED), code="account_suspended")
    if row.status != TenantStatus.ACTIVE:
        raise PermissionDenied(
            f"This account is {row.status}: its API keys cannot be used until an operator approves it.",
            code=f"account_{row.status}",
        )
    own = TenantDefaults.effective
    limits = (
        Limits(
            f"t:{row.tenant_id}",
            own(row.t_rpm, defaults.rpm),
            own(row.t_tpm, defaults.tpm),
            own(row.t_conc, defaults.max_concurrent),
        ),
        Limits(f"k:{row.id}", row.k_rpm, row.k_tpm, row.k_conc),
    )
    caller = Caller(
        key_id=row.id,
        tenant_id=row.tenant_id,
        limits=tuple(lim for lim in limits if lim.any),
        scopes=frozenset(row.scopes),
    )
    return caller, row.expires_at


def playground_hash(tenant_id: str) -> str:
    """The key_hash of the tenant's playground key. Not a SHA-256 hex digest, so no bearer token ever hashes to
    it: the key works only through the console's signed-in playground, never from outside."""
    return f"playground:{tenant_id}"


async def playground_caller(session: AsyncSession, db: AsyncEngine, tenant_id: str, defaults: TenantDefaults) -> Caller:
    """The Caller of the console's playground for the tenant: its own inference-only key (made on first use), so
    playground calls are admitted, limited, metered and billed exactly like API calls, and marked `playground`."""
    key_hash = playground_hash(tenant_id)
    try:
        caller, _ = await _resolve(db, key_hash, defaults)
        return dataclasses.replace(caller, source="playground")
    except AuthenticationFailed:
        pass  # not made yet (or revoked by an operator: then the insert does nothing and it stays refused)
    stmt = (
        postgresql.insert(_KEYS)
        .values(id=ids.key_id(), tenant_id=tenant_id, name="Console playground", prefix="playground",
                key_hash=key_hash, created_at=utcnow(), scopes=[Scope.INFERENCE.value])
        .on_conflict_do_nothing(index_elements=["key_hash"])
    )  # fmt: skip
    await session.execute(stmt)
    await session.commit()
    caller, _ = await _resolve(db, key_hash, defaults)
    return dataclasses.replace(caller, source="playground")


async def create_tenant(session: AsyncSession, name: str) -> Tenant:
    """A new tenant, written (not committed): Conflict if the name is taken."""
    tenant = Tenant(id=ids.tenant_id(), name=name)
    session.add(tenant)
    async with db_errors(duplicate=Conflict(f"A tenant named {name!r} already exists.", param="name")):
        await session.flush()
    return tenant


async def get_tenant(session: AsyncSession, tenant_id: str) -> Tenant:
    tenant = await session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound(f"No tenant {tenant_id!r}.")
    return tenant


async def create_key(
    session: AsyncSession,
    tenant_id: str,
    name: str,
    expires_at: datetime | None = None,
    scopes: list[str] | None = None,
) -> tuple[ApiKey, str]:
    """A new key for the tenant (not committed), with `scopes` (None: all); the plaintext is returned once and
    never stored."""
    await get_tenant(session, tenant_id)
    scopes = check_scopes(scopes) if scopes is not None else list(ALL_SCOPES)
    if expires_at is not None and (expires_at.tzinfo is None or expires_at <= utcnow()):
        raise InvalidRequest("expires_at must be a future time with a timezone.", param="expires_at")
    plaintext = generate_key()
    key = ApiKey(
        id=ids.key_id(),
        tenant_id=tenant_id,
        name=name,
        prefix=display_prefix(plaintext),
        key_hash=hash_key(plaintext),
        expires_at=expires_at,
        scopes=scopes,
    )
    session.add(key)
    return key, plaintext


def check_scopes(scopes: list[str]) -> list[str]:
    """The scopes in their canonical order; InvalidRequest for an unknown one or none."""
    unknown = [s for s in scopes if s not in ALL_SCOPES]
    if unknown or not scopes:
        raise InvalidRequest(f"scopes must be a non-empty list of: {', '.join(ALL_SCOPES)}.", param="scopes")
    return [s for s in ALL_SCOPES if s in scopes]


async def revoke_key(session: AsyncSession, key_id: str) -> ApiKey:
    """Mark the key revoked (not committed); NotFound if unknown or already revoked."""
    key = await session.get(ApiKey, key_id)
    if key is None or key.revoked_at is not None:
        raise NotFound(f"No active key {key_id!r}.")
    key.revoked_at = utcnow()
    return key
