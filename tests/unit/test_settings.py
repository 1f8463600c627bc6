from __future__ import annotations

import pytest

from gateway.settings import Settings, to_asyncpg_url


def test_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@db:5432/x")
    monkeypatch.setenv("ENGINE_URL", "http://engine:8000")
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", "s3cret-" + "x" * 32)
    monkeypatch.setenv("GATEWAY_PORT", "9000")
    s = Settings()
    assert s.database.async_url() == "postgresql+asyncpg://u:p@db:5432/x"
    assert s.engine.url == "http://engine:8000"
    assert s.admin.token is not None and s.admin.token.get_secret_value() == "s3cret-" + "x" * 32
    assert "s3cret" not in repr(s)
    assert s.server.port == 9000 and s.server.host == "127.0.0.1"


def test_url_forms() -> None:
    assert to_asyncpg_url("postgres://a@/b?host=/tmp") == "postgresql+asyncpg://a@/b?host=/tmp"
    with pytest.raises(ValueError):
        to_asyncpg_url("mysql://x")


def test_grafana_dashboard_uses_only_metrics_the_gateway_exports() -> None:
    import json
    import re
    from pathlib import Path

    from gateway.metrics import Metrics
    from gateway.settings import MetricsSettings

    dashboard = json.loads((Path(__file__).parents[2] / "deploy/grafana/lora-gateway.json").read_text())
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"gateway_[a-z_]+", target["expr"])
    }
    exported = {
        sample
        for metric in Metrics(MetricsSettings()).registry.collect()
        for sample in (metric.name, metric.name + "_total", metric.name + "_bucket", metric.name + "_count")
    }
    assert used and used <= exported, used - exported


def test_database_errors_are_sorted_into_unavailable_or_not() -> None:
    import asyncpg
    from sqlalchemy import exc as sa_exc

    from gateway.db import is_unavailable

    assert is_unavailable(FileNotFoundError("no socket"))
    assert is_unavailable(asyncpg.exceptions.AdminShutdownError("terminating connection"))
    # what asyncpg raises on the next statement when the server ended the session between two (a shutdown)
    assert is_unavailable(asyncpg.InternalClientError("cannot switch to state 15; another operation is in progress"))
    assert not is_unavailable(asyncpg.exceptions.UniqueViolationError("duplicate key"))
    wrapped = sa_exc.DBAPIError("SELECT 1", None, ConnectionRefusedError("refused"))
    wrapped.__cause__ = ConnectionRefusedError("refused")
    assert is_unavailable(wrapped)
    assert not is_unavailable(ValueError("a bug, not an outage"))


def test_engine_pool_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.settings import EngineSettings

    monkeypatch.setenv("ENGINE_URL", "http://one:8000/")
    assert EngineSettings().pool_urls() == ["http://one:8000"]  # a single engine is a pool of one
    monkeypatch.setenv("ENGINE_URLS", " http://a:8001, http://b:8002/ ,,http://a:8001")
    s = EngineSettings()
    assert s.pool_urls() == ["http://a:8001", "http://b:8002"]  # ENGINE_URLS wins; blanks and repeats dropped
    assert (s.load_factor, s.load_floor, s.health_interval_s) == (1.25, 8, 2.0)
    monkeypatch.delenv("ENGINE_URL")
    monkeypatch.delenv("ENGINE_URLS")
    assert EngineSettings().pool_urls() == []


def test_exposure_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GATEWAY_FORWARDED_ALLOW_IPS", "FORWARDED_ALLOW_IPS", "METRICS_HOST", "METRICS_PORT"):
        monkeypatch.delenv(name, raising=False)
    s = Settings()
    # Metrics listen apart from the API, on loopback unless told; forwarded headers are believed from loopback only.
    assert (s.metrics.host, s.metrics.port) == ("127.0.0.1", 9464) != (s.server.host, s.server.port)
    assert s.server.forwarded_allow_ips == "127.0.0.1,::1"
    assert s.server.limit_concurrency >= 1
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.0.0.0/8")  # uvicorn's own name works too
    assert Settings().server.forwarded_allow_ips == "10.0.0.0/8"
    monkeypatch.setenv("GATEWAY_FORWARDED_ALLOW_IPS", "172.30.80.0/24")  # ours wins
    assert Settings().server.forwarded_allow_ips == "172.30.80.0/24"
    monkeypatch.setenv("METRICS_PORT", "70000")
    with pytest.raises(ValueError, match="METRICS_PORT"):
        Settings()


def test_a_short_admin_token_is_refused_in_one_line_without_its_value(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pydantic import ValidationError

    from gateway.cli import main

    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", "hunter2-hunter2-hunter2-hunter2")  # 31 characters
    with pytest.raises(ValidationError):
        Settings()
    with pytest.raises(SystemExit) as stopped:
        main(["migrate"])
    message = str(stopped.value.code)
    assert "GATEWAY_ADMIN_TOKEN must be at least 32 characters (it has 31)" in message
    assert "\n" not in message and "hunter2" not in message
    assert "hunter2" not in capsys.readouterr().err

    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", "")  # `GATEWAY_ADMIN_TOKEN=` in an env file: unset, not refused
    assert Settings().admin.token is None
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", "h" * 32)
    assert Settings().admin.token is not None


def test_session_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    s = Settings().sessions
    assert (s.idle_minutes, s.max_hours, s.cookie_secure) == (60, 12, "auto")
    assert (s.signin_max_failures, s.signin_window_minutes) == (5, 15)
    monkeypatch.setenv("SESSION_COOKIE_SECURE", "true")
    monkeypatch.setenv("SESSION_IDLE_MINUTES", "5")
    s = Settings().sessions
    assert s.cookie_secure == "true" and s.idle_minutes == 5
    monkeypatch.setenv("SESSION_COOKIE_SECURE", "sometimes")
    with pytest.raises(ValueError):
        Settings()


def test_payment_queue_names_agree() -> None:
    """billing enqueues auto-recharge jobs itself (it never imports the gateway): same name as the worker's."""
    from billing import auto_recharge
    from gateway import queue
    from gateway.payments import dunning

    assert queue.AUTO_RECHARGE == auto_recharge.ENTRYPOINT and queue.DUNNING == dunning.ENTRYPOINT
