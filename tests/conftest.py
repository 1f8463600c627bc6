"""Shared fixtures: the real services are started once per test session."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from devstack import tinymodel
from devstack.engine import EngineOptions, LocalEngine
from devstack.postgres import EmbeddedPostgres
from gateway.migrate import upgrade
from tests.support.processes import ROOT, GatewayProcess, free_port
from tests.support.sql import Sql
from tests.support.stripe import run_localstripe
from tests.support.trainer import TrainerProcess

ARTIFACTS = ROOT / "test-artifacts"
NO_TENANT_DEFAULTS = {
    name: "0"
    for name in (
        "TENANT_DEFAULT_RPM",
        "TENANT_DEFAULT_TPM",
        "TENANT_DEFAULT_MAX_CONCURRENT",
        "TENANT_MAX_DEPLOYMENTS",
        "TENANT_MAX_ADAPTER_BYTES",
        "TENANT_UPLOADS_PER_MINUTE",
    )
}


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gateway")


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The tiny model and adapters, cached in the data folder so runs do not rebuild them."""
    out = ROOT / ".data" / "models"
    tinymodel.ensure_built(out, adapters=6)
    return out


@pytest.fixture(scope="session")
def postgres(workdir: Path) -> Iterator[EmbeddedPostgres | None]:
    """The embedded PostgreSQL server (None when TEST_DATABASE_URL points elsewhere)."""
    if os.environ.get("TEST_DATABASE_URL"):
        yield None
        return
    pg = EmbeddedPostgres(workdir / "postgres")
    pg.start()
    yield pg
    pg.stop()


@pytest.fixture(scope="session")
def database_url(postgres: EmbeddedPostgres | None) -> str:
    """TEST_DATABASE_URL if given (an empty database), else the embedded PostgreSQL; migrated to head."""
    url = os.environ.get("TEST_DATABASE_URL") or (postgres.url if postgres else None)
    assert url
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def localstripe(workdir: Path) -> Iterator[object]:
    """One localstripe for the whole session (every test file that talks to "Stripe" shares it)."""
    yield from run_localstripe(workdir)


@pytest.fixture(scope="session")
def sql(database_url: str) -> Sql:
    return Sql(database_url)


def _running_engine(models_dir: Path, data_dir: Path) -> Iterator[LocalEngine]:
    eng = LocalEngine(
        EngineOptions(
            model_dir=models_dir / tinymodel.BASE_NAME,
            served_name=tinymodel.BASE_NAME,
            port=free_port(),
            data_dir=data_dir,
        )
    )
    eng.start()
    try:
        eng.wait_ready(progress=False)
        yield eng
    finally:
        eng.stop()


@pytest.fixture(scope="session")
def engine(models_dir: Path, workdir: Path) -> Iterator[LocalEngine]:
    """One real vLLM CPU server with the tiny model, LoRA enabled, runtime loading allowed."""
    yield from _running_engine(models_dir, workdir / "engine")


@pytest.fixture(scope="session")
def second_engine(models_dir: Path, workdir: Path) -> Iterator[LocalEngine]:
    """Another engine with the same model, for engine-pool tests (started only by the tests that ask for it)."""
    yield from _running_engine(models_dir, workdir / "engine-2")


@pytest.fixture(scope="session")
def admin_token() -> str:
    return secrets.token_urlsafe(32)  # the gateway refuses an admin token under 32 characters


@pytest.fixture(scope="session")
def gateway_env(
    database_url: str, engine: LocalEngine, admin_token: str, workdir: Path, models_dir: Path
) -> dict[str, str]:
    """The environment of the session's gateway; tests may start more gateways with variations of it."""
    return {
        "DATABASE_URL": database_url,
        "ENGINE_URL": engine.url,
        "GATEWAY_ADMIN_TOKEN": admin_token,
        "GATEWAY_DATA_DIR": str(workdir / "data"),
        "ADAPTER_REGISTER_ROOT": str(models_dir / "adapters"),  # what register_adapter seeds from
        # A 2-core box whose vLLM CPU engine runs 50 streams at full tilt can take seconds to accept a connection
        # (the default 5 s is meant for an engine with cores to spare); the fault tests are not about that.
        "ENGINE_CONNECT_TIMEOUT": "30",
        # Likewise its /health: with the default 2 s × 3 failures, the gateway took the engine out mid-test (503
        # for most of 48 streams) while the machine held every process back for 15-20 s at a time.
        "ENGINE_HEALTH_TIMEOUT": "10",
        # No default tenant bounds (0: unlimited): the tests of rates, faults and uploads make many calls and
        # uploads per tenant and set the limits they test; tests/integration/test_tenant_quotas.py tests these.
        **NO_TENANT_DEFAULTS,
    }


@pytest.fixture(scope="session")
def data_dir(gateway_env: dict[str, str]) -> Path:
    return Path(gateway_env["GATEWAY_DATA_DIR"])


@pytest.fixture(scope="session")
def gateway(gateway_env: dict[str, str]) -> Iterator[GatewayProcess]:
    ARTIFACTS.mkdir(exist_ok=True)
    gw = GatewayProcess(gateway_env, ARTIFACTS / "gateway.log")
    gw.start()
    yield gw
    gw.stop()


@pytest.fixture(scope="session")
def trainer_env(gateway_env: dict[str, str]) -> dict[str, str]:
    """The trainers' environment: the gateway's, with a short heartbeat timeout (a killed worker's job is taken
    over within seconds)."""
    return {**gateway_env, "TRAINER_HEARTBEAT_TIMEOUT": "6"}


@pytest.fixture(scope="session")
def trainer(trainer_env: dict[str, str], gateway: GatewayProcess) -> Iterator[TrainerProcess]:
    """One fine-tuning worker for the session (as `make run` starts one)."""
    ARTIFACTS.mkdir(exist_ok=True)
    worker = TrainerProcess(trainer_env, ARTIFACTS / "trainer.log")
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture(scope="module")
def second_gateway(gateway_env: dict[str, str]) -> Iterator[GatewayProcess]:
    """Another gateway process on the same database and engine (for the tests of what holds across processes)."""
    gw = GatewayProcess(gateway_env, ARTIFACTS / "gateway-second.log")
    gw.start()
    yield gw
    gw.stop()


@pytest.fixture(scope="session")
def admin(gateway: GatewayProcess, admin_token: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {admin_token}"}, timeout=60) as c:
        yield c


@dataclass
class TenantHandle:
    id: str
    key: str
    key_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@pytest.fixture(scope="session")
def make_tenant(admin: httpx.Client) -> Callable[..., TenantHandle]:
    def make(**fields: object) -> TenantHandle:
        t = admin.post("/admin/tenants", json={"name": f"t-{secrets.token_hex(4)}", **fields})
        assert t.status_code == 201, t.text
        k = admin.post(f"/admin/tenants/{t.json()['id']}/keys", json={"name": "test"})
        assert k.status_code == 201, k.text
        return TenantHandle(id=t.json()["id"], key=k.json()["key"], key_id=k.json()["id"])

    return make


@pytest.fixture(scope="session")
def register_adapter(admin: httpx.Client, models_dir: Path) -> Callable[[str, str, int], dict[str, str]]:
    """Seed an adapter for a tenant through the admin API (tenants upload theirs elsewhere)."""

    def register(tenant_id: str, name: str, which: int = 1) -> dict[str, str]:
        r = admin.post(
            f"/admin/tenants/{tenant_id}/adapters",
            json={"name": name, "path": str(models_dir / "adapters" / f"lora-{which}")},
        )
        assert r.status_code == 201, r.text
        assert r.json()["status"] == "ready", r.json()
        return dict(r.json())

    return register
