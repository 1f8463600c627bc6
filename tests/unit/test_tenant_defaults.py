"""TENANT_* settings: generous but bounded defaults, 0 for unlimited, a tenant's own value first."""

from __future__ import annotations

import pytest

from gateway.settings import Settings, TenantDefaults


def test_defaults_are_bounded_and_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    d = Settings().tenants
    assert (d.rpm, d.tpm, d.max_concurrent, d.max_deployments, d.uploads_per_minute) == (600, 200_000, 32, 20, 10)
    assert d.max_adapter_bytes == 2 * 1024**3
    monkeypatch.setenv("TENANT_MAX_DEPLOYMENTS", "3")
    monkeypatch.setenv("TENANT_DEFAULT_RPM", "0")
    d = Settings().tenants
    assert d.max_deployments == 3 and d.rpm == 0


def test_negative_defaults_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENANT_UPLOADS_PER_MINUTE", "-1")
    with pytest.raises(ValueError, match=r"TENANT_UPLOADS_PER_MINUTE|uploads_per_minute"):
        Settings()


@pytest.mark.parametrize(
    ("own", "default", "effective"),
    [(None, 600, 600), (None, 0, None), (5, 600, 5), (0, 600, None), (7, 0, 7)],
)
def test_a_tenants_own_value_wins_and_zero_is_unlimited(own: int | None, default: int, effective: int | None) -> None:
    assert TenantDefaults.effective(own, default) == effective
