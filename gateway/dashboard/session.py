"""The dashboard's sign-in area: its session cookie and guards (server-side sessions: gateway/people/web.py).

The cookie is HttpOnly, SameSite=Lax, scoped to /admin, Secure as SESSION_COOKIE_SECURE says. It names a
session row in PostgreSQL, checked on every request; signing out, a new password or a disabled user ends it.
Form posts are checked for CSRF by Litestar's middleware (gateway/csrf.py); the Bearer JSON API under /admin
never sees this cookie.
"""

from __future__ import annotations

from gateway.people import web
from gateway.people.roles import Permission

COOKIE = "gw_admin_session"
AREA = web.Area(cookie=COOKIE, path="/admin", operators=True)

SignInRequired = web.SignInRequired
require_session = web.signed_in(AREA)
may_manage = web.requires(AREA, Permission.MANAGE)
may_bill = web.requires(AREA, Permission.BILLING)
may_manage_operators = web.requires(AREA, Permission.OPERATORS)
