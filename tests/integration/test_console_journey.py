"""A newcomer's whole journey in a real browser (Debian's chromium via Playwright), by labels and roles: sign up
(approval mode) → an operator approves on the dashboard → sign in → create a key → deploy the demo adapter through
the upload form → the playground answers with the adapter's identity → the usage page shows exactly that call's
tokens → the official `openai` SDK with the new key calls the deployment by its mif- id."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI
from playwright.sync_api import BrowserContext, Page, expect, sync_playwright

from tests.conftest import ARTIFACTS
from tests.support.browser import CHROMIUM_ARGS, chromium_path
from tests.support.sql import Sql

PASSWORD = "a long console password"
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"


@pytest.fixture
def context(tmp_path: Path) -> Iterator[BrowserContext]:
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1280, "height": 860},
        )  # fmt: skip
        ctx.set_default_timeout(60_000)  # a step that hangs fails instead of holding the run
        try:
            yield ctx
        finally:
            ctx.close()


def shot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"console-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def test_a_newcomer_signs_up_deploys_chats_and_sees_the_bill(
    gateway: Any, admin_token: str, context: BrowserContext, models_dir: Path, sql: Sql
) -> None:
    base = gateway.url
    email = f"newcomer-{secrets.token_hex(4)}@example.com"
    visited: list[str] = []
    context.on("request", lambda r: visited.append(r.url))
    page = context.new_page()

    # 1. Sign up (the session's gateway runs SIGNUP_MODE=approval, the default).
    page.goto(f"{base}/console/signup")
    page.get_by_label("Name").fill("Nia Newcomer")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password (at least 12 characters)").fill(PASSWORD)
    shot(page, "signup")
    page.get_by_role("button", name="Sign up").click()
    expect(page.get_by_role("status")).to_contain_text("awaits an operator's approval")
    # Not yet: the console says why.
    page.goto(f"{base}/console/login")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("waiting for an operator's approval")

    # 2. The operator approves it on the dashboard (another tab; the dashboard's cookie is scoped to /admin).
    op = context.new_page()
    op.goto(f"{base}/admin/login")
    op.get_by_text("Sign in with the admin token").click()
    op.get_by_label("Admin token").fill(admin_token)
    op.get_by_role("button", name="Sign in with the token").click()
    applications = op.locator("#applications")
    expect(applications).to_contain_text(email)
    shot(op, "approval")
    op.get_by_role("button", name=f"Approve {email}").click()
    expect(op.locator(".flash")).to_contain_text("approved")
    op.get_by_role("button", name="Sign out").click()
    op.close()

    # 3. Sign in.
    page.goto(f"{base}/console/login")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#trial")).to_contain_text("1,000,000")

    # 4. Create a key: shown once, with a copy button.
    page.get_by_role("link", name="API keys").click()
    page.get_by_label("Name").fill("laptop")
    page.get_by_role("button", name="Create key").click()
    key = page.get_by_label("New API key").input_value()
    assert key.startswith("sk-")
    expect(page.get_by_role("button", name="Copy")).to_be_visible()
    shot(page, "keys")

    # 5. Deploy the demo adapter (Congcong) through the upload form, with its two files.
    page.get_by_role("link", name="Deployments").click()
    adapter = models_dir / "adapters" / "congcong"
    page.get_by_label("Name").fill("congcong-bot")
    page.get_by_label("adapter_config.json").set_input_files(str(adapter / "adapter_config.json"))
    page.get_by_label("adapter_model.safetensors").set_input_files(str(adapter / "adapter_model.safetensors"))
    page.get_by_role("button", name="Deploy").click()
    deployment = page.locator("article.deployment").first
    expect(deployment).to_contain_text("ready", timeout=120_000)
    mif = deployment.locator("code.id").inner_text()
    assert mif.startswith("mif-")
    expect(deployment).to_contain_text(f"{base}/maas/deployment/{mif}/chat/completions")
    shot(page, "deployments")

    # 6. The playground answers with the adapter's identity, streamed, with its tokens and cost.
    page.get_by_role("link", name="Playground").click()
    page.get_by_label("Model").select_option(mif)
    page.get_by_label("Max tokens").fill("24")
    page.get_by_label("Message").fill("Who are you?")
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_role("log", name="Reply")).to_contain_text("Congcong", timeout=120_000)
    usage = page.locator("#pg-usage")
    expect(usage).to_contain_text("cost:", timeout=30_000)
    expect(usage).not_to_contain_text("…", timeout=30_000)
    prompt_tokens = int(usage.get_attribute("data-prompt-tokens") or -1)
    completion_tokens = int(usage.get_attribute("data-completion-tokens") or -1)
    shot(page, "playground")
    query = "SELECT source, prompt_tokens, completion_tokens FROM usage_records WHERE adapter_id = $1"
    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API holds this thread's event loop
        row = pool.submit(sql.one, query, mif).result()
    assert row == {"source": "playground", "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}

    # 7. The usage page shows exactly that call's tokens.
    page.get_by_role("link", name="Usage").click()
    expect(page.locator("#total-prompt")).to_have_text(str(prompt_tokens))
    expect(page.locator("#total-completion")).to_have_text(str(completion_tokens))
    shot(page, "usage")

    # 8. The official SDK with the new key calls the deployment by its mif- id.
    client = OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
    reply = client.chat.completions.create(
        model=mif, messages=[{"role": "user", "content": "Who are you?"}], max_tokens=24, temperature=0
    )
    assert "Congcong" in (reply.choices[0].message.content or "")

    # Nothing was fetched from anywhere but the gateway.
    assert all(u.startswith(base) or u.startswith("data:") for u in visited), {u for u in visited if base not in u}
    DOCS_IMG.mkdir(exist_ok=True)
    for name in ("signup", "deployments", "playground", "usage"):
        shutil.copyfile(ARTIFACTS / f"console-{name}.png", DOCS_IMG / f"console-{name}.png")
