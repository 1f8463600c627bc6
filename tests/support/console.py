"""A tenant's browser without a browser: an httpx client on the console's forms (cookies, CSRF tokens), from
its own client address (X-Forwarded-For, which the gateway trusts from 127.0.0.1) so that the sign-up limit per
address is each test's own."""

from __future__ import annotations

import secrets

import httpx

from tests.support.signin import CSRF_INPUT, PASSWORD

CONSOLE_COOKIE = "gw_console_session"


def new_address() -> str:
    return f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250) + 1}"


def new_email() -> str:
    return f"tenant-{secrets.token_hex(5)}@example.com"


class Console:
    def __init__(self, base_url: str, address: str | None = None) -> None:
        self.address = address or new_address()
        self.http = httpx.Client(base_url=base_url, follow_redirects=False, timeout=60,
                                 headers={"X-Forwarded-For": self.address})  # fmt: skip

    def __enter__(self) -> Console:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def csrf(self, page: str = "/console/login") -> str:
        r = self.http.get(page, follow_redirects=True)
        assert r.status_code == 200, (page, r.status_code, r.text[:300])
        found = CSRF_INPUT.search(r.text)
        assert found, f"no CSRF field on {page}"
        return found.group(1)

    def post_form(self, path: str, data: dict[str, str], page: str = "/console") -> httpx.Response:
        return self.http.post(path, data={"_csrf_token": self.csrf(page), **data})

    def sign_up(self, email: str, password: str = PASSWORD, name: str = "Ada Tenant") -> httpx.Response:
        return self.post_form("/console/signup", {"name": name, "email": email, "password": password},
                              page="/console/signup")  # fmt: skip

    def sign_in(self, email: str, password: str = PASSWORD) -> httpx.Response:
        return self.post_form("/console/login", {"email": email, "password": password}, page="/console/login")

    @property
    def session(self) -> str | None:
        return self.http.cookies.get(CONSOLE_COOKIE, path="/console")
