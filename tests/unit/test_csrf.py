"""The CSRF middleware's exclusions split the routes exactly: every browser page is checked, no API route is."""

from __future__ import annotations

import re

from gateway.app import create_app
from gateway.csrf import API_PATHS
from gateway.settings import SessionSettings, Settings

# Pages a browser's cookies authenticate; everything else is an API (Bearer keys, the admin token, a signature).
BROWSER_MODULES = ("gateway.dashboard", "gateway.console", "litestar.static_files")
EXCLUDED = re.compile("|".join(API_PATHS))


def test_browser_pages_are_protected_and_api_routes_are_not() -> None:
    app = create_app(Settings(sessions=SessionSettings(secret="s" * 40)))
    browser, api = set(), set()
    for route in app.routes:
        modules = {
            h.fn.__module__ for h in getattr(route, "route_handlers", []) if h.fn.__module__ != "litestar.routes.http"
        }
        (browser if any(m.startswith(BROWSER_MODULES) for m in modules) else api).add(route.path)
    assert {"/admin", "/admin/login", "/admin/logout", "/admin/dashboard/keys/{key_id:str}/revoke"} <= browser
    assert {"/v1/chat/completions", "/admin/tenants", "/admin/engines", "/webhooks/stripe"} <= api
    assert not [p for p in browser if EXCLUDED.search(p)], "browser pages left without CSRF protection"
    assert not [p for p in api if not EXCLUDED.search(p)], "API routes that would refuse a POST without a CSRF token"
