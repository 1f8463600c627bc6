"""`make demo` in a second terminal finds the admin token of the gateway `make run` started, or says in one line
what to set (it used to die with a FileNotFoundError traceback when `make run` was given GATEWAY_ADMIN_TOKEN)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from devstack import demo, run
from gateway.settings import Settings


def test_a_token_given_to_make_run_is_found_by_make_demo_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", "given-to-make-run-0123456789abcdef")
    assert run.admin_token(tmp_path, Settings()) == "given-to-make-run-0123456789abcdef"
    assert demo.admin_token(tmp_path, {}) == "given-to-make-run-0123456789abcdef"  # the 2nd terminal lacks it
    assert stat.S_IMODE((tmp_path / demo.TOKEN_FILE).stat().st_mode) == 0o600


def test_a_generated_token_is_kept_across_runs_and_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWAY_ADMIN_TOKEN", raising=False)
    token = run.admin_token(tmp_path, Settings())
    assert len(token) >= 24 and run.admin_token(tmp_path, Settings()) == token
    assert demo.admin_token(tmp_path, {}) == token


def test_the_variable_wins_over_the_file(tmp_path: Path) -> None:
    (tmp_path / demo.TOKEN_FILE).write_text("from-the-file\n")
    assert demo.admin_token(tmp_path, {"GATEWAY_ADMIN_TOKEN": "from-the-variable"}) == "from-the-variable"
    assert demo.admin_token(tmp_path, {"GATEWAY_ADMIN_TOKEN": ""}) == "from-the-file"


def test_without_either_it_says_in_one_line_what_to_set(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exited:
        demo.admin_token(tmp_path, {})
    message = str(exited.value.code)
    assert "GATEWAY_ADMIN_TOKEN" in message and "\n" not in message
