"""A browser without a browser: an httpx client that signs in on the dashboard's forms (cookies, CSRF tokens)."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import subprocess
import sys

import httpx

from tests.support.processes import ROOT

CSRF_INPUT = re.compile(r'name="_csrf_token" value="([^"]+)"')
SESSION_COOKIE = "gw_admin_session"
CSRF_COOKIE = "gw_csrf"
PASSWORD = "correct horse battery staple"


class Browser:
    """One browser profile: its own cookie jar; redirects are returned, not followed."""

    def __init__(self, base_url: str, headers: dict[str, str] | None = None) -> None:
        self.http = httpx.Client(base_url=base_url, follow_redirects=False, timeout=60, headers=headers)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def csrf(self, page: str = "/admin/login") -> str:
        """The CSRF token a page puts in its forms (and the cookie that goes with it); signed in, the sign-in
        form sends the browser on to the overview, whose sign-out form has it too."""
        r = self.http.get(page, follow_redirects=True)
        assert r.status_code == 200, (page, r.status_code, r.text[:300])
        found = CSRF_INPUT.search(r.text)
        assert found, f"no CSRF field on {page}"
        return found.group(1)

    def post_form(self, path: str, data: dict[str, str], page: str = "/admin") -> httpx.Response:
        """Submit a form as the page that shows it would (with its CSRF token)."""
        return self.http.post(path, data={"_csrf_token": self.csrf(page), **data})

    def sign_in(self, email: str, password: str = PASSWORD) -> httpx.Response:
        return self.post_form("/admin/login", {"email": email, "password": password}, page="/admin/login")

    def sign_in_with_token(self, token: str) -> httpx.Response:
        return self.post_form("/admin/login", {"token": token}, page="/admin/login")

    def sign_out(self) -> httpx.Response:
        return self.post_form("/admin/logout", {})

    @property
    def session(self) -> str | None:
        return self.http.cookies.get(SESSION_COOKIE, path="/admin")

    def opens_dashboard(self) -> bool:
        """True if /admin shows the overview; False if it sends the browser to sign in."""
        r = self.http.get("/admin")
        assert r.status_code in (200, 303), r.status_code
        return r.status_code == 200


def session_id(token: str) -> str:
    """The sessions table's id of a cookie's token."""
    return hashlib.sha256(token.encode()).hexdigest()


def operators_cli(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m gateway operators …` against the test database."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", "operators", *args],
        input=stdin, env={**os.environ, **env}, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def create_operator(env: dict[str, str], role: str = "owner", password: str = PASSWORD) -> str:
    """A new operator user made with the command line; returns its e-mail."""
    email = f"op-{secrets.token_hex(4)}@example.com"
    done = operators_cli(env, "create", "--email", email, "--name", f"Operator {email[3:11]}", "--role", role,
                         "--password-stdin", stdin=password + "\n")  # fmt: skip
    assert done.returncode == 0, done.stderr
    return email
