"""The console's Billing page: credit and trial, the card on file (Stripe.js Elements + a SetupIntent: the card
never reaches us), top-ups, auto-recharge and payment notices. Its script calls the JSON routes below with the
console session and the CSRF token in a header; the services are the payments API's (gateway/payments/service.py).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

from litestar import Controller, Request, Response, get, post
from litestar.response import Redirect, Template
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from billing.errors import BillingError
from billing.money import MICROS_PER_MINOR
from billing.settings import BillingSettings
from gateway.audit.service import Actor, client_ip
from gateway.console import service, session
from gateway.console.deployments import _error as json_error
from gateway.console.pages import page
from gateway.dashboard.format import minor_per_major, money
from gateway.dashboard.pages import HEADERS, Form
from gateway.errors import GatewayError, InvalidRequest
from gateway.http_errors import from_billing
from gateway.payments import service as pay
from gateway.people import sessions
from gateway.settings import Settings

# Real Stripe.js also talks to its API and opens 3-D Secure frames from these; localstripe's copy only to itself.
_STRIPE_EXTRA = {"connect-src": "https://api.stripe.com", "frame-src": "https://hooks.stripe.com"}


def stripe_ready(settings: BillingSettings) -> bool:
    return bool(settings.stripe_api_key and settings.stripe_publishable_key)


def csp(stripe_js_url: str) -> str:
    """The dashboard's policy with Stripe.js's origin allowed to run, frame and be called (this page only)."""
    parts = urlsplit(stripe_js_url)
    origin = f"{parts.scheme}://{parts.netloc}"
    real = parts.netloc == "js.stripe.com"
    extra = {d: " ".join([origin, _STRIPE_EXTRA[d]] if real and d in _STRIPE_EXTRA else [origin])
             for d in ("script-src", "frame-src", "connect-src")}  # fmt: skip
    base = HEADERS["Content-Security-Policy"].replace("script-src 'self'", f"script-src 'self' {extra['script-src']}")
    return f"{base}; frame-src {extra['frame-src']}; connect-src 'self' {extra['connect-src']}"


def to_minor(value: Any, currency: str, param: str) -> int:
    """An amount typed in the billing currency ("20.00") in its minor units; never through a float."""
    try:
        major = Decimal(str(value).strip().replace(",", ""))
    except InvalidOperation:
        major = Decimal("NaN")
    minor = major * minor_per_major(currency) if major.is_finite() else major
    if not minor.is_finite() or minor != minor.to_integral_value():
        raise InvalidRequest(f"{param.replace('_', ' ').capitalize()} must be an amount such as 20.00.", param=param)
    return int(minor)


def major(minor: int | None, currency: str) -> str:
    """Minor units as the plain number a form field shows ("20.00")."""
    per = minor_per_major(currency)
    value = Decimal(int(minor or 0)) / per
    return f"{value:.{0 if per == 1 else 2}f}"


def money_minor(minor: int | None, currency: str) -> str:
    return money(int(minor or 0) * MICROS_PER_MINOR, currency)


def _gateway(exc: GatewayError | BillingError) -> GatewayError:
    return from_billing(exc) if isinstance(exc, BillingError) else exc


def _actor(request: Request[Any, Any, Any]) -> Actor:
    return Actor(session.who(request).actor, client_ip(request))


class BillingController(Controller):
    guards = [session.require_session]

    @get("/billing", include_in_schema=False)
    async def billing(self, request: Request[Any, Any, Any], db_engine: AsyncEngine, settings: Settings) -> Template:
        return await self._page(request, db_engine, settings.billing)

    async def _page(
        self, request: Request[Any, Any, Any], db: AsyncEngine, cfg: BillingSettings, status_code: int = 200,
        error: str | None = None,
    ) -> Template:  # fmt: skip
        tenant_id: str = session.who(request).tenant_id  # type: ignore[assignment]
        balance = await service.balance(db, tenant_id)
        ready = stripe_ready(cfg) and balance is not None
        cards: list[dict[str, Any]] = []
        if ready:
            try:
                cards = (await pay.list_cards(db, cfg, tenant_id))["data"]
            except (GatewayError, BillingError) as exc:
                error = error or f"Stripe could not be reached: {_gateway(exc).message}"
        postpaid = balance is not None and balance["billing_mode"] == "postpaid"
        return page(
            request, "billing.html", status_code=status_code, error=error, balance=balance, ready=ready,
            configured=stripe_ready(cfg), cfg=cfg, card=next((c for c in cards if c.get("default")), None),
            auto=await pay.get_auto_recharge(db, tenant_id) if balance else None,
            notices=[{**n, "at": datetime.fromtimestamp(n["created_at"], UTC)}
                     for n in (await pay.notices(db, tenant_id, 20))["data"]],
            invoices=(await service.invoice_list(db, tenant_id))[:12] if postpaid else [],
            major=major, money_minor=money_minor,
            headers={"Content-Security-Policy": csp(cfg.stripe_js_url)} if ready else None,
        )  # fmt: skip

    @post("/billing/setup-intent", include_in_schema=False, status_code=201)
    async def setup_intent(self, request: Request[Any, Any, Any], db_engine: AsyncEngine, settings: Settings) -> Any:
        """A SetupIntent whose client_secret the page's Stripe.js confirms with the card."""
        try:
            return await pay.setup_intent(db_engine, settings.billing, session.who(request).tenant_id)  # type: ignore[arg-type]
        except (GatewayError, BillingError) as exc:
            return json_error(_gateway(exc))

    @post("/billing/card", include_in_schema=False, status_code=201)
    async def save_card(
        self, request: Request[Any, Any, Any], data: dict[str, Any], db_engine: AsyncEngine, db_session: AsyncSession,
        settings: Settings,
    ) -> Any:  # fmt: skip
        """The confirmed SetupIntent's card becomes the card on file (replacing the one before)."""
        who = session.who(request)
        try:
            found = await pay.save_card(db_engine, settings.billing, who.tenant_id, str(data.get("setup_intent") or ""),  # type: ignore[arg-type]
                                        None, _actor(request))  # fmt: skip
        except (GatewayError, BillingError) as exc:
            return json_error(_gateway(exc))
        saved = next((c for c in found["data"] if c.get("default")), None)
        if saved:
            await sessions.set_flash(db_session, who.session_id, f"Card {saved['brand']} •••• {saved['last4']} saved.")
            await db_session.commit()
        return found

    @post("/billing/card/remove", include_in_schema=False, status_code=303)
    async def remove_card(
        self, request: Request[Any, Any, Any], data: Form, db_engine: AsyncEngine, db_session: AsyncSession,
        settings: Settings,
    ) -> Redirect | Template:  # fmt: skip
        who = session.who(request)
        try:
            await pay.remove_card(db_engine, settings.billing, who.tenant_id, data.get("payment_method", ""),  # type: ignore[arg-type]
                                  _actor(request))  # fmt: skip
        except (GatewayError, BillingError) as exc:
            err = _gateway(exc)
            return await self._page(request, db_engine, settings.billing, err.status_code, err.message)
        await sessions.set_flash(db_session, who.session_id, "Card removed.")
        await db_session.commit()
        return Redirect("/console/billing", status_code=303)

    @post("/billing/topups", include_in_schema=False, status_code=201)
    async def topup(
        self, request: Request[Any, Any, Any], data: dict[str, Any], db_engine: AsyncEngine, settings: Settings
    ) -> Any:
        """A PaymentIntent for the amount typed ("20.00"): paid with the card on file ("default") or the pm_… of a
        card Stripe.js just set up; the page confirms it with Stripe.js if Stripe asks for authentication."""
        tenant_id: str = session.who(request).tenant_id  # type: ignore[assignment]
        try:
            currency = (await service.balance(db_engine, tenant_id) or {}).get("currency", settings.billing.currency)
            amount = to_minor(data.get("amount", ""), currency, "amount")
            pm = data.get("payment_method") or "default"
            done = await pay.create_topup(db_engine, settings.billing, tenant_id, amount, str(pm), _actor(request))
        except (GatewayError, BillingError) as exc:
            return json_error(_gateway(exc))
        return await self._with_credit(db_engine, tenant_id, done)

    @post("/billing/topups/{topup_id:str}/refresh", include_in_schema=False, status_code=200)
    async def refresh(
        self, request: Request[Any, Any, Any], topup_id: str, db_engine: AsyncEngine, settings: Settings
    ) -> Any:
        """Read the PaymentIntent back from Stripe and credit it now if it succeeded (the webhook may be later)."""
        tenant_id: str = session.who(request).tenant_id  # type: ignore[assignment]
        try:
            done = await pay.refresh_topup(db_engine, settings.billing, tenant_id, topup_id)
        except (GatewayError, BillingError) as exc:
            return json_error(_gateway(exc))
        return await self._with_credit(db_engine, tenant_id, done)

    async def _with_credit(self, db: AsyncEngine, tenant_id: str, topup: dict[str, Any]) -> Response[Any]:
        bal = await service.balance(db, tenant_id)
        shown = money(bal["credit_micros"], bal["currency"]) if bal else None
        return Response({**topup, "credit_display": shown})

    @post("/billing/auto-recharge", include_in_schema=False, status_code=303)
    async def auto_recharge(
        self, request: Request[Any, Any, Any], data: Form, db_engine: AsyncEngine, db_session: AsyncSession,
        settings: Settings,
    ) -> Redirect | Template:  # fmt: skip
        who = session.who(request)
        cfg = settings.billing
        try:
            bal = await service.balance(db_engine, who.tenant_id)  # type: ignore[arg-type]
            currency = bal["currency"] if bal else cfg.currency
            enabled = data.get("enabled") == "on"
            threshold = to_minor(data.get("threshold", "0") or "0", currency, "threshold")
            amount = to_minor(data.get("amount", "0") or "0", currency, "amount")
            await pay.put_auto_recharge(db_engine, cfg, who.tenant_id, enabled, threshold, amount, _actor(request))  # type: ignore[arg-type]
        except (GatewayError, BillingError) as exc:
            err = _gateway(exc)
            return await self._page(request, db_engine, cfg, err.status_code, err.message)
        await sessions.set_flash(db_session, who.session_id, f"Auto-recharge {'on' if enabled else 'off'}.")
        await db_session.commit()
        return Redirect("/console/billing", status_code=303)
