"""The documentation site (docs/) against the code: every setting and every route is documented, nothing else is.

`mkdocs build --strict` (run by `make test`) checks the links; these tests check the content that would go stale
silently when a setting or a route is added, renamed or removed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

from litestar.routes import HTTPRoute
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from gateway.app import create_app
from gateway.settings import Settings

DOCS = Path(__file__).resolve().parents[2] / "docs"
# "GET /v1/models/{model}" as the pages write a route: a method, then a path up to a space, backtick, ? or ).
DOCUMENTED_ROUTE = re.compile(r"\b(GET|POST|PUT|PATCH|DELETE) (/[^\s`?)]*)")
# Routes that are not the gateway's own API: Litestar's schema pages, the dashboard's and console's static files.
UNDOCUMENTED_PREFIXES = ("/schema", "/admin/dashboard/static/", "/console/static/")
# Routes the pages name that belong to the engine, not to the gateway.
ENGINE_ROUTES = {("POST", "/v1/load_lora_adapter")}


def _env_names(model: type[BaseSettings]) -> Iterator[str]:
    for name, field in model.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseSettings):
            yield from _env_names(kind)
        elif isinstance(field.validation_alias, AliasChoices):
            yield from (c for c in field.validation_alias.choices if isinstance(c, str))
        else:
            yield name.upper()


def _template(path: str) -> str:
    """/admin/tenants/{tenant_id:str}/keys and /admin/tenants/{id}/keys both become /admin/tenants/{}/keys."""
    return re.sub(r"\{[^}]*\}", "{}", path.rstrip("/") or "/")


@cache
def app_routes() -> frozenset[tuple[str, str]]:
    routes = set()
    for route in create_app(Settings()).routes:
        if not isinstance(route, HTTPRoute) or route.path.startswith(UNDOCUMENTED_PREFIXES):
            continue
        for handler in route.route_handlers:
            routes |= {(m, _template(route.path)) for m in handler.http_methods if m not in ("OPTIONS", "HEAD")}
    return frozenset(routes)


def documented_routes(pages: list[Path]) -> set[tuple[str, str]]:
    text = "\n".join(page.read_text() for page in pages)
    return {(method, _template(path)) for method, path in DOCUMENTED_ROUTE.findall(text)}


def test_every_setting_is_on_the_configuration_page() -> None:
    page = (DOCS / "configuration.md").read_text()
    names = set(_env_names(Settings))
    assert {"DATABASE_URL", "ENGINE_URLS", "BILLING_PERIOD", "STRIPE_API_KEY", "METRICS_TENANT_LABELS"} <= names
    missing = sorted(name for name in names if f"`{name}`" not in page)
    assert not missing, f"settings missing from docs/configuration.md: {missing}"


def test_every_route_is_on_an_api_page() -> None:
    routes = app_routes()
    assert ("POST", "/v1/chat/completions") in routes and ("PATCH", "/admin/keys/{}") in routes
    missing = sorted(routes - documented_routes(sorted((DOCS / "api").glob("*.md"))))
    assert not missing, f"routes missing from docs/api/*.md (write them as `METHOD /path`): {missing}"


def test_every_route_the_docs_name_exists() -> None:
    documented = documented_routes(sorted(DOCS.rglob("*.md")))
    assert ("GET", "/v1/balance") in documented
    stale = sorted(documented - app_routes() - ENGINE_ROUTES)
    assert not stale, f"docs/ names routes the gateway does not have: {stale}"
