"""Deployment files checked against the code: the compose-spec and Kubernetes schemas, setting names, shared paths.

The Helm chart is rendered by the real `helm` (`make helm` installs it); nothing here deploys anything.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as kv_utils
from pydantic import AliasChoices, ValidationError
from pydantic_settings import BaseSettings

from gateway.app import create_app
from gateway.settings import EngineSettings, Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
CHART = DEPLOY / "helm" / "lora-gateway"
GATEWAY_IMAGE = "lora-gateway"
NAMESPACE = "llm"
REQUIRED = {
    "secrets": {
        "databaseUrl": "postgresql://gw:pw@db.example:5432/gw",
        "adminToken": "t0ken" * 8,
        "engineApiKey": "k3y",
    },
    "model": {"volume": {"existingClaim": "base-model"}},
}


# ---------------------------------------------------------------------------------------------- what the code says


def _env_names(model: type[BaseSettings]) -> Iterator[str]:
    for name, field in model.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseSettings):
            yield from _env_names(kind)
        elif isinstance(field.validation_alias, AliasChoices):
            yield from (c for c in field.validation_alias.choices if isinstance(c, str))
        elif isinstance(field.validation_alias, str):
            yield field.validation_alias
        else:
            yield name.upper()


@cache
def setting_names() -> frozenset[str]:
    """Every environment variable the gateway reads, from the settings classes' aliases."""
    return frozenset(_env_names(Settings))


@cache
def app_paths() -> frozenset[str]:
    return frozenset(route.path for route in create_app(Settings()).routes)


def test_setting_names_are_read_from_the_classes() -> None:
    names = setting_names()
    assert {"DATABASE_URL", "ENGINE_URL", "GATEWAY_ADMIN_TOKEN", "GATEWAY_WORKERS", "PROMETHEUS_MULTIPROC_DIR"} <= names
    assert {"ADAPTER_MAX_UPLOAD_BYTES", "BILLING_PERIOD", "STRIPE_API_KEY"} <= names
    assert {"ENGINE_URLS", "ENGINE_HEALTH_INTERVAL", "ENGINE_LOAD_FACTOR", "ENGINE_LOAD_FLOOR"} <= names
    assert "NOT_A_SETTING" not in names


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings parsed from exactly this environment (types checked by pydantic, as the gateway would)."""
    for name in setting_names():
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


# ---------------------------------------------------------------------------------------------- docker compose

_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?[-?]([^}]*))?\}")


def interpolate(value: str) -> str:
    """Compose's ${VAR:-default} with the defaults (a required ${VAR:?msg} becomes 'set-VAR-xxx…', long enough
    for the admin token's 32-character minimum)."""
    return _INTERPOLATION.sub(
        lambda m: m.group(2) if "?" not in m.group(0) else f"set-{m.group(1)}-".ljust(40, "x"), value
    )


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def gateway_services() -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose()["services"].items() if str(s.get("image", "")).startswith(GATEWAY_IMAGE)}


def engine_services(services: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    services = compose()["services"] if services is None else services
    return {n: s for n, s in services.items() if str(s.get("image", "")).startswith("vllm/")}


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    return {k: interpolate(str(v)) for k, v in service.get("environment", {}).items()}


def flag(args: list[str], name: str) -> str | None:
    """The value of --name=value (or True-ish '' for a bare --name) in an argument list."""
    for i, arg in enumerate(args):
        if arg == name:
            nxt = args[i + 1] if i + 1 < len(args) else ""
            return "" if nxt.startswith("--") else nxt
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """target → source of a compose service's short-form volumes."""
    out = {}
    for spec in service.get("volumes", []):
        source, target, *_ = interpolate(spec).split(":")
        out[target] = source
    return out


def test_compose_file_matches_the_compose_spec_schema() -> None:
    schema = json.loads((resources.files("check_jsonschema") / "builtin_schemas/vendor/compose-spec.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose())]
    assert errors == []
    broken = copy.deepcopy(compose())
    broken["services"]["gateway"]["enviroment"] = {}  # a typo must be caught: the schema is really applied
    assert any("enviroment" in e.message for e in validator.iter_errors(broken))


def test_compose_gateway_env_names_are_real_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    services = gateway_services()
    assert {"gateway", "migrate"} <= services.keys()
    for name, service in services.items():
        unknown = set(service.get("environment", {})) - setting_names()
        assert not unknown, f"{name}: {sorted(unknown)} are not settings of gateway/settings.py"
    env = {k: interpolate(str(v)) for k, v in services["gateway"]["environment"].items()}
    s = settings_from(env, monkeypatch)  # the values parse too (ints are ints, the URL is postgresql://)
    assert s.database.async_url().startswith("postgresql+asyncpg://")
    assert s.server.host == "0.0.0.0" and s.server.workers >= 2
    assert s.admin.token is not None


def test_compose_wiring(monkeypatch: pytest.MonkeyPatch) -> None:
    services = compose()["services"]
    gw = services["gateway"]
    s = settings_from(compose_env(gw), monkeypatch)
    assert len(s.engine.pool_urls()) == len(engine_services()) == 2  # the pool: both engines
    assert urlsplit(s.database.url).hostname in services
    assert gw["command"] == ["serve"] and services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["environment"]["DATABASE_URL"] == gw["environment"]["DATABASE_URL"]
    assert gw["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert "ports" not in gw and gw["deploy"]["replicas"] >= 2  # replicas share the load balancer's port
    upstream = re.search(r"server\s+([\w-]+):(\d+)", (DEPLOY / "nginx.conf").read_text())
    assert upstream and upstream.groups() == ("gateway", str(s.server.port))
    assert mounts(services["lb"]).get("/etc/nginx/conf.d/default.conf") == "./nginx.conf"
    # Each replica keeps its own multiprocess metrics folder, never on the volume replicas share.
    assert s.metrics.multiproc_dir in gw["tmpfs"]
    assert not Path(s.metrics.multiproc_dir).is_relative_to(s.storage.data_dir)


def compose_pool_problems(services: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What is wrong with the engine pool the gateway services would build from these services (ideally nothing)."""
    gw = services["gateway"]
    s = settings_from(compose_env(gw), monkeypatch)
    engines = engine_services(services)
    problems = []
    if "ENGINE_URL" in gw["environment"]:
        problems.append("ENGINE_URL beside ENGINE_URLS: ignored, and misleading")
    pooled: dict[str, dict[str, Any]] = {}
    for url in s.engine.pool_urls():
        name, port = urlsplit(url).hostname, urlsplit(url).port
        if name not in engines:
            problems.append(f"ENGINE_URLS names {url}, but no engine service {name} exists")
            continue
        pooled[name] = engines[name]
        if flag([interpolate(a) for a in engines[name]["command"]], "--port") != str(port):
            problems.append(f"{url}: {name} does not listen on port {port}")
        if engines[name].get("profiles"):
            problems.append(f"{name} is in profiles {engines[name]['profiles']}: a plain `up` does not start it")
        if name not in gw.get("depends_on", {}):
            problems.append(f"the gateway does not depend on {name}")
    if idle := sorted(engines.keys() - pooled.keys()):
        problems.append(f"engine services no gateway sends traffic to: {idle}")
    # Adapters are stored under GATEWAY_DATA_DIR and loaded by absolute path on whichever engine an adapter's
    # traffic goes to (its home, a spill, a failover): every engine sees the same volume at the same path.
    gw_mounts = mounts(gw)
    data_dir, model_dir = str(s.storage.data_dir), str(s.adapters.base_model_dir)
    for name, engine in pooled.items():
        args = [interpolate(a) for a in engine["command"]]
        engine_mounts = mounts(engine)
        if engine_mounts.get(data_dir) != gw_mounts.get(data_dir):
            problems.append(f"{name}: the gateway's adapters volume {gw_mounts.get(data_dir)} is not at {data_dir}")
        if flag(args, "--enable-lora") != "":
            problems.append(f"{name}: no --enable-lora")
        if flag(args, "--max-lora-rank") != str(s.engine.max_lora_rank):
            problems.append(f"{name}: --max-lora-rank is not ENGINE_MAX_LORA_RANK={s.engine.max_lora_rank}")
        # The base model: the engine's --model is the folder the gateway reads config.json from.
        if flag(args, "--model") != model_dir or engine_mounts.get(model_dir) != gw_mounts.get(model_dir):
            problems.append(f"{name}: the base model is not the gateway's {model_dir}")
        if engine.get("environment", {}).get("VLLM_ALLOW_RUNTIME_LORA_UPDATING") != "True":
            problems.append(f"{name}: runtime LoRA loading is off")
    # One base model, adapters interchangeable between engines: the same model and LoRA flags everywhere.
    commands = {name: [interpolate(a) for a in e["command"]] for name, e in pooled.items()}
    if len({tuple(c) for c in commands.values()}) > 1:
        problems.append(f"the pool's engines run different commands: {commands}")
    return problems


def test_compose_engine_pool_is_every_engine_sharing_the_adapters(monkeypatch: pytest.MonkeyPatch) -> None:
    engines = engine_services()
    assert sorted(engines) == ["engine-a", "engine-b"]
    assert compose_pool_problems(compose()["services"], monkeypatch) == []
    for name, engine in engines.items():
        gpus = engine["deploy"]["resources"]["reservations"]["devices"]
        assert gpus and "gpu" in gpus[0]["capabilities"], name
    reservations = [r for e in engines.values() for r in e["deploy"]["resources"]["reservations"]["devices"]]
    gpu_ids = [i for r in reservations for i in r["device_ids"]]
    assert len(gpu_ids) == len(set(gpu_ids)) == 2  # one GPU each, not both on GPU 0


def _set_urls(urls: str) -> Callable[[dict[str, Any]], None]:
    def change(services: dict[str, Any]) -> None:
        services["gateway"]["environment"] = {**services["gateway"]["environment"], "ENGINE_URLS": urls}

    return change


def _set_b(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(services: dict[str, Any]) -> None:  # a new value: engine-a and engine-b share the anchor's lists
        services["engine-b"] = {
            **services["engine-b"],
            key: value(services["engine-b"][key]) if callable(value) else value,
        }

    return change


BROKEN_COMPOSE = {
    "url-of-no-service": (_set_urls("http://engine-a:8000,http://engine-c:8000"), "no engine service engine-c"),
    "engine-left-out": (_set_urls("http://engine-a:8000"), "no gateway sends traffic to: ['engine-b']"),
    "wrong-port": (_set_urls("http://engine-a:8000,http://engine-b:8001"), "engine-b does not listen on port 8001"),
    "old-single-url": (
        lambda s: s["gateway"].update(
            environment={**s["gateway"]["environment"], "ENGINE_URL": "http://engine-a:8000"}
        ),
        "ENGINE_URL beside ENGINE_URLS",
    ),
    "b-in-a-profile": (_set_b("profiles", ["pool"]), "a plain `up` does not start it"),
    "b-without-adapters": (
        _set_b("volumes", lambda vs: [v for v in vs if not v.startswith("gateway-data:")]),
        "engine-b: the gateway's adapters volume",
    ),
    "b-other-rank": (
        _set_b("command", lambda c: [a.replace("--max-lora-rank=16", "--max-lora-rank=8") for a in c]),
        "engine-b: --max-lora-rank",
    ),
    "b-other-flags": (_set_b("command", lambda c: [*c, "--max-loras=2"]), "different commands"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_COMPOSE))
def test_compose_pool_check_catches_a_broken_pool(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    change, expected = BROKEN_COMPOSE[case]
    services = copy.deepcopy(compose()["services"])
    change(services)
    problems = compose_pool_problems(services, monkeypatch)
    assert any(expected in p for p in problems), problems
    assert compose_pool_problems(compose()["services"], monkeypatch) == []  # the real file was not touched


def test_prometheus_and_grafana_config() -> None:
    prom = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    # Each gateway on its metrics port: the API's port has no /metrics.
    assert jobs["gateway"]["metrics_path"] == "/metrics" not in app_paths()
    (sd,) = jobs["gateway"]["dns_sd_configs"]
    gateway_env = compose()["services"]["gateway"]["environment"]
    assert sd["names"] == ["gateway"] and sd["port"] == int(gateway_env["METRICS_PORT"])
    assert gateway_env["METRICS_HOST"] == "0.0.0.0" and str(sd["port"]) in compose()["services"]["gateway"]["expose"]
    engine_targets = {t.split(":")[0] for c in jobs["vllm"]["static_configs"] for t in c["targets"]}
    assert engine_targets == set(engine_services())
    grafana = compose()["services"]["grafana"]
    dashboards = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/lora-gateway.yml").read_text())
    folder = dashboards["providers"][0]["options"]["path"]
    assert any(t.startswith(folder + "/") and src.endswith("lora-gateway.json") for t, src in mounts(grafana).items())
    json.loads((DEPLOY / "grafana/lora-gateway.json").read_text())


# ---------------------------------------------------------------------------------------------- Dockerfile


def dockerfile() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in lines]


def test_dockerfile() -> None:
    instructions = dockerfile()
    final = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    stage = instructions[final:]
    assert stage[0] == ("FROM", "python:3.11-slim")
    users = [arg for op, arg in stage if op == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    (health,) = [arg for op, arg in stage if op == "HEALTHCHECK"]
    assert "/readyz" in health and "/readyz" in app_paths()
    env_names = {m.group(1) for op, arg in stage if op == "ENV" for m in re.finditer(r"(\w+)=", arg)}
    assert env_names - {"PATH", "PYTHONUNBUFFERED"} <= setting_names()
    for op, arg in instructions:  # the engine extras (vllm, torch) never go into the gateway image
        if op == "RUN" and "pip install" in arg:
            assert not re.search(r"\[(cpu|gpu)|vllm|torch", arg), arg
    copied = " ".join(arg for op, arg in instructions if op == "COPY")
    assert "alembic.ini" in copied and "alembic " in copied + " "  # gateway/migrate.py finds them beside gateway/
    (entry,) = [arg for op, arg in stage if op == "ENTRYPOINT"]
    script = DEPLOY / "docker-entrypoint.sh"
    assert Path(json.loads(entry)[0]).name == script.name and os.access(script, os.X_OK)
    subprocess.run(["sh", "-n", str(script)], check=True)
    ignored = [ln for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln and not ln.startswith("#")]
    assert ".venv" in ignored and ".data" in ignored and "gateway" not in ignored


# ---------------------------------------------------------------------------------------------- Helm chart


@pytest.fixture(scope="module")
def helm() -> str:
    found = shutil.which("helm") or str(Path(sys.executable).parent / "helm")
    if not os.access(found, os.X_OK):
        if os.environ.get("CI"):
            pytest.fail("helm is not installed (make helm)")
        pytest.skip("helm is not installed: run `make helm`")
    return found


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        out[key] = _merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def render(helm: str, tmp_path: Path, values: dict[str, Any]) -> list[dict[str, Any]]:
    file = tmp_path / "values.yaml"
    file.write_text(yaml.safe_dump(values))
    cmd = [helm, "template", "rel", str(CHART), "--namespace", NAMESPACE, "-f", str(file)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (doc,) = by_kind(docs, kind)
    return doc


def pod_env(docs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """A container's environment as the gateway would see it: envFrom ConfigMap/Secret, then env."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            cm = next(d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"] == source["configMapRef"]["name"])
            env.update(cm["data"])
        if "secretRef" in source:  # a Secret the chart did not create (existingSecret) adds nothing we can see
            for secret in by_kind(docs, "Secret"):
                if secret["metadata"]["name"] == source["secretRef"]["name"]:
                    env.update(secret["stringData"])
    for item in container.get("env", []):
        env[item["name"]] = item.get("value", "<from secret>")
    return env


def claim_mounts(pod: dict[str, Any], container: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """PVC claim name → (mount path, read-only) in one container."""
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if v.get("persistentVolumeClaim")
    }
    return {
        claims[m["name"]]: (m["mountPath"], m.get("readOnly", False))
        for m in container["volumeMounts"]
        if m["name"] in claims
    }


SCENARIOS = {
    "engines": REQUIRED,
    "external-router": _merge(
        REQUIRED,
        {"engines": {"enabled": False}, "externalEngine": {"url": "http://vllm-router-service.vllm.svc.cluster.local"}},
    ),
    "external-engine-list": _merge(
        REQUIRED,
        {
            "engines": {"enabled": False},
            "externalEngine": {"url": ["http://vllm-a.vllm:8000", "http://vllm-b.vllm:8000"]},
        },
    ),
    "fixed-replicas-servicemonitor-existing-secret": _merge(
        REQUIRED,
        {
            "gateway": {"autoscaling": {"enabled": False}, "replicas": 3},
            "metrics": {"serviceMonitor": {"enabled": True}},
            "secrets": {"existingSecret": "gw-secrets", "databaseUrl": "", "adminToken": ""},
            "engines": {"replicas": 2},
        },
    ),
}


def test_helm_lint(helm: str, tmp_path: Path) -> None:
    for name, values in SCENARIOS.items():
        file = tmp_path / f"{name}.yaml"
        file.write_text(yaml.safe_dump(values))
        out = subprocess.run([helm, "lint", "--strict", str(CHART), "-f", str(file)], capture_output=True, text=True)
        assert out.returncode == 0, f"{name}: {out.stdout}{out.stderr}"


def test_helm_refuses_missing_secrets_and_model(helm: str, tmp_path: Path) -> None:
    with pytest.raises(subprocess.CalledProcessError) as exc:
        render(helm, tmp_path, {})
    assert "is required" in exc.value.stderr
    with pytest.raises(subprocess.CalledProcessError) as exc:
        render(helm, tmp_path, _merge(REQUIRED, {"engines": {"enabled": False}}))
    assert "externalEngine.url is required" in exc.value.stderr
    with pytest.raises(subprocess.CalledProcessError) as exc:  # an empty list is no engine either
        render(helm, tmp_path, _merge(REQUIRED, {"engines": {"enabled": False}, "externalEngine": {"url": []}}))
    assert "externalEngine.url is required" in exc.value.stderr
    with pytest.raises(subprocess.CalledProcessError) as exc:  # an empty pool: the gateway would not start
        render(helm, tmp_path, _merge(REQUIRED, {"engines": {"replicas": 0}}))
    assert "engines.replicas must be at least 1" in exc.value.stderr


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_rendered_chart_is_valid_kubernetes(helm: str, tmp_path: Path, scenario: str) -> None:
    docs = render(helm, tmp_path, SCENARIOS[scenario])
    version = kv_utils.latest_version()
    for doc in docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD: checked against the Service below
        kubernetes_validate.validate(doc, version, strict=True)
    broken = copy.deepcopy(one(docs, "Deployment"))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pth"] = "/readyz"
    with pytest.raises(kubernetes_validate.ValidationError):  # the validator really rejects unknown fields
        kubernetes_validate.validate(broken, version, strict=True)
    for monitor in by_kind(docs, "ServiceMonitor"):
        service = next(s for s in by_kind(docs, "Service") if s["metadata"]["name"] == monitor["metadata"]["name"])
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        assert {e["port"] for e in monitor["spec"]["endpoints"]} == {p["name"] for p in service["spec"]["ports"]}
        assert {e["path"] for e in monitor["spec"]["endpoints"]} == {"/metrics"}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_chart_gateway_settings(helm: str, tmp_path: Path, scenario: str, monkeypatch: pytest.MonkeyPatch) -> None:
    values = SCENARIOS[scenario]
    docs = render(helm, tmp_path, values)
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = pod_env(docs, container)
    assert set(env) - setting_names() == set()
    assert "ENGINE_URLS" in env and "ENGINE_URL" not in env  # the pool setting only: ENGINE_URLS would win anyway
    for secret in by_kind(docs, "Secret"):
        assert set(secret["stringData"]) - setting_names() == set()
    if not values["secrets"].get("existingSecret"):
        s = settings_from(env, monkeypatch)
        assert s.database.url == values["secrets"]["databaseUrl"] and s.admin.token is not None
    else:
        assert not by_kind(docs, "Secret")
        refs = [e["secretRef"]["name"] for e in container["envFrom"] if "secretRef" in e]
        assert refs == [values["secrets"]["existingSecret"]]
        s = settings_from(env, monkeypatch)
    assert container["args"] == ["serve"]
    assert s.server.host == "0.0.0.0" and s.server.port == container["ports"][0]["containerPort"]
    assert s.server.workers == 2
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz" in app_paths()
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz" in app_paths()
    # Multiprocess metrics: a per-pod in-memory folder, not the adapters volume every pod shares.
    tmp = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert Path(s.metrics.multiproc_dir).is_relative_to("/tmp") and tmp["/tmp"] == "tmp"
    assert not Path(s.metrics.multiproc_dir).is_relative_to(s.storage.data_dir)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_chart_scaling_objects_select_the_gateway(helm: str, tmp_path: Path, scenario: str) -> None:
    values = SCENARIOS[scenario]
    docs = render(helm, tmp_path, values)
    deployment = one(docs, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = next(s for s in by_kind(docs, "Service") if s["metadata"]["name"] == deployment["metadata"]["name"])
    assert service["spec"]["selector"].items() <= labels.items()
    assert one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    if values.get("gateway", {}).get("autoscaling", {}).get("enabled", True):
        assert "replicas" not in deployment["spec"]  # the HPA owns it
        assert hpas[0]["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    else:
        assert not hpas and deployment["spec"]["replicas"] == values["gateway"]["replicas"]


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_chart_migrations_run_once_before_the_pods(helm: str, tmp_path: Path, scenario: str) -> None:
    docs = render(helm, tmp_path, SCENARIOS[scenario])
    job = one(docs, "Job")
    hooks = job["metadata"]["annotations"]
    assert set(hooks["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["migrate"]
    assert set(pod_env(docs, container)) <= setting_names()
    (db_url,) = [e for e in container["env"] if e["name"] == "DATABASE_URL"]
    secret_name = db_url["valueFrom"]["secretKeyRef"]["name"]
    for secret in by_kind(docs, "Secret"):  # created by the chart: it must exist before the hook Job runs
        assert secret["metadata"]["name"] == secret_name
        assert "pre-install" in secret["metadata"]["annotations"]["helm.sh/hook"]
        assert int(secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(hooks["helm.sh/hook-weight"])


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_chart_engines_share_the_adapter_path(
    helm: str, tmp_path: Path, scenario: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = SCENARIOS[scenario]
    docs = render(helm, tmp_path, values)
    gw_pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    gw_env = {k: v for k, v in pod_env(docs, gw_pod["containers"][0]).items() if v != "<from secret>"}
    s = settings_from(gw_env, monkeypatch)
    gw_claims = claim_mounts(gw_pod, gw_pod["containers"][0])
    adapters_claim = next(c for c, (path, _) in gw_claims.items() if path == str(s.storage.data_dir / "adapters"))
    assert gw_claims[adapters_claim][1] is False  # the gateway writes uploads there
    statefulsets = by_kind(docs, "StatefulSet")
    if not values.get("engines", {}).get("enabled", True):
        assert not statefulsets
        external = values["externalEngine"]["url"]
        assert s.engine.pool_urls() == (external if isinstance(external, list) else external.split(","))
        return
    engine = statefulsets[0]
    pod = engine["spec"]["template"]["spec"]
    (vllm,) = pod["containers"]
    args = vllm["args"]
    assert engine["spec"]["replicas"] == values.get("engines", {}).get("replicas", 1)
    # The gateway hands the engine absolute adapter paths: the same claim at the same path, read-only there.
    assert claim_mounts(pod, vllm)[adapters_claim] == (str(s.storage.data_dir / "adapters"), True)
    assert flag(args, "--enable-lora") == ""
    assert flag(args, "--max-lora-rank") == str(s.engine.max_lora_rank)
    assert flag(args, "--model") == str(s.adapters.base_model_dir)
    model_claim = values["model"]["volume"]["existingClaim"]
    model_path = claim_mounts(pod, vllm)[model_claim][0]
    assert claim_mounts(gw_pod, gw_pod["containers"][0])[model_claim][0] == model_path
    assert Path(flag(args, "--model") or "").is_relative_to(model_path)
    assert {"name": "VLLM_ALLOW_RUNTIME_LORA_UPDATING", "value": "True"} in vllm["env"]
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert chart_pool_problems(docs, s) == []


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]


def test_values_file_settings_are_real() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values["gateway"]["env"]) <= setting_names()


def gateway_settings(docs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The gateway pods' settings as rendered (secret values left out)."""
    container = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return settings_from({k: v for k, v in pod_env(docs, container).items() if v != "<from secret>"}, monkeypatch)


def chart_pool_problems(docs: list[dict[str, Any]], s: Settings) -> list[str]:
    """What is wrong with the gateway's ENGINE_URLS against the engines the chart deploys (ideally nothing):
    one URL per StatefulSet pod, in order, by the stable name its headless Service gives it, on its port."""
    (engine,) = by_kind(docs, "StatefulSet")
    (vllm,) = engine["spec"]["template"]["spec"]["containers"]
    headless = next(x for x in by_kind(docs, "Service") if x["metadata"]["name"] == engine["spec"]["serviceName"])
    problems = []
    if headless["spec"].get("clusterIP") != "None":
        problems.append("the engines' Service is not headless: no DNS name per pod")
    if not headless["spec"]["selector"].items() <= pod_labels(engine).items():
        problems.append("the headless Service does not select the engine pods")
    urls = s.engine.pool_urls()
    replicas = engine["spec"]["replicas"]
    if len(urls) != replicas:
        problems.append(f"{len(urls)} engine URLs for {replicas} engine pods: {urls}")
    for i, url in enumerate(urls):
        parts = urlsplit(url)
        pod = f"{engine['metadata']['name']}-{i}"
        if parts.hostname != f"{pod}.{headless['metadata']['name']}.{NAMESPACE}.svc.cluster.local":
            problems.append(f"URL {i} is {url}, not pod {pod} through {headless['metadata']['name']}")
        if str(parts.port) != flag(vllm["args"], "--port"):
            problems.append(f"{url}: the engines listen on {flag(vllm['args'], '--port')}")
        if parts.port not in {sp["port"] for sp in headless["spec"]["ports"]}:
            problems.append(f"{url}: not a port of the headless Service")
    return problems


@pytest.mark.parametrize("replicas", [1, 3])
def test_chart_engine_urls_list_every_engine_pod(
    helm: str, tmp_path: Path, replicas: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = render(helm, tmp_path, _merge(REQUIRED, {"engines": {"replicas": replicas}}))
    s = gateway_settings(docs, monkeypatch)
    urls = s.engine.pool_urls()
    assert len(urls) == len(set(urls)) == replicas == one(docs, "StatefulSet")["spec"]["replicas"]
    assert chart_pool_problems(docs, s) == []
    # A broken list must fail the check: one pod short, or a pod named twice.
    config = next(d for d in by_kind(docs, "ConfigMap") if "ENGINE_URLS" in d["data"])
    for broken_urls in (urls[:-1], [urls[0]] * replicas if replicas > 1 else [urls[0].replace("-0.", "-1.")]):
        broken = copy.deepcopy(docs)
        next(d for d in by_kind(broken, "ConfigMap") if d == config)["data"]["ENGINE_URLS"] = ",".join(broken_urls)
        assert chart_pool_problems(broken, gateway_settings(broken, monkeypatch)) != [], broken_urls


def test_values_file_pool_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    env = yaml.safe_load((CHART / "values.yaml").read_text())["gateway"]["env"]
    assert {"ENGINE_HEALTH_INTERVAL", "ENGINE_LOAD_FACTOR"} <= env.keys()
    s = settings_from({k: str(v) for k, v in env.items()}, monkeypatch)
    defaults = {name: field.default for name, field in EngineSettings.model_fields.items()}
    assert s.engine.health_interval_s == defaults["health_interval_s"]  # the values file shows the defaults
    assert (s.engine.load_factor, s.engine.load_floor) == (defaults["load_factor"], defaults["load_floor"])
    with pytest.raises(ValidationError, match="ENGINE_LOAD_FACTOR"):  # really parsed: a factor below 1 is refused
        settings_from({**env, "ENGINE_LOAD_FACTOR": "0.5"}, monkeypatch)


# ---------------------------------------------------------------------------------------------- exposure


def nginx_blocks(text: str) -> dict[str, Any]:
    """nginx.conf as nested dicts: {directive: [args, …]} with blocks under "server", "location = /x" …"""
    tokens = re.findall(r"[{};]|[^\s{};]+", re.sub(r"#[^\n]*", "", text))
    root: dict[str, Any] = {}
    stack, words = [root], []
    for tok in tokens:
        if tok == "{":
            child: dict[str, Any] = {}
            stack[-1][" ".join(words)] = child
            stack.append(child)
            words = []
        elif tok == "}":
            stack.pop()
        elif tok == ";":
            stack[-1].setdefault(words[0], []).append(" ".join(words[1:]))
            words = []
        else:
            words.append(tok)
    return root


def _seconds(value: str) -> float:
    return float(value[:-1]) * {"s": 1, "m": 60}[value[-1]] if value[-1] in "sm" else float(value)


def _bytes(value: str) -> int:
    return int(value[:-1]) * {"k": 1024, "m": 1024**2}[value[-1].lower()] if value[-1].isalpha() else int(value)


UPLOAD_LOCATIONS = ("location = /v1/adapters", "location = /v1/files", "location ~ ^/v1/uploads/[^/]+/parts$")


def test_nginx_bounds_slow_clients_and_buffers_all_but_uploads(monkeypatch: pytest.MonkeyPatch) -> None:
    server = nginx_blocks((DEPLOY / "nginx.conf").read_text())["server"]
    s = settings_from(compose_env(compose()["services"]["gateway"]), monkeypatch)
    # A head or a body that trickles in is cut off by nginx: uvicorn has no such timeout.
    assert _seconds(server["client_header_timeout"][0]) <= 30
    assert _seconds(server["client_body_timeout"][0]) <= 60
    assert _seconds(server["send_timeout"][0]) <= 120
    assert _seconds(server["keepalive_timeout"][0]) < s.server.keep_alive_s  # nginx closes idle ones first
    _count, size = server["large_client_header_buffers"][0].split()
    assert _bytes(size) <= s.server.max_header_bytes  # the head is bounded here (httptools does not)
    # Every request is read whole before a gateway sees it, except on the upload routes.
    assert server["proxy_request_buffering"] == ["on"]
    assert _bytes(server["client_max_body_size"][0]) == s.server.max_body_bytes
    locations = {k: v for k, v in server.items() if k.startswith("location")}
    assert "proxy_request_buffering" not in locations["location /"]
    for name in UPLOAD_LOCATIONS:
        assert locations[name]["proxy_request_buffering"] == ["off"], name
        assert _bytes(locations[name]["client_max_body_size"][0]) == s.adapters.max_upload_bytes, name
    buffered_off = {k for k, v in locations.items() if v.get("proxy_request_buffering") == ["off"]}
    assert buffered_off == set(UPLOAD_LOCATIONS)
    assert "/v1/adapters" in app_paths()


def test_nginx_keeps_metrics_off_the_public_port() -> None:
    server = nginx_blocks((DEPLOY / "nginx.conf").read_text())["server"]
    assert server["location = /metrics"] == {"return": ["404"]}
    assert "/metrics" not in app_paths()  # nor does the gateway's API port serve it


def test_compose_trusts_forwarded_headers_from_the_proxy_network_only(monkeypatch: pytest.MonkeyPatch) -> None:
    services = compose()["services"]
    s = settings_from(compose_env(services["gateway"]), monkeypatch)
    (front,) = compose()["networks"]["front"]["ipam"]["config"]
    assert s.server.forwarded_allow_ips == interpolate(front["subnet"]) != "*"
    assert services["lb"]["networks"] == ["front"]  # nginx's address is in the trusted subnet
    assert "front" in services["gateway"]["networks"]
    on_front = {name for name, svc in services.items() if "front" in svc.get("networks", [])}
    assert on_front == {"lb", "gateway"}  # no other container may speak for a client


def test_compose_engines_require_the_key_the_gateway_sends(monkeypatch: pytest.MonkeyPatch) -> None:
    gw_env = compose()["services"]["gateway"]["environment"]
    s = settings_from(compose_env(compose()["services"]["gateway"]), monkeypatch)
    assert s.engine.api_key is not None
    assert "?" in gw_env["ENGINE_API_KEY"]  # required: compose refuses to start without it
    for name, engine in engine_services().items():
        # VLLM_API_KEY is vLLM's --api-key (vllm/entrypoints/.../middleware: `args.api_key or [envs.VLLM_API_KEY]`)
        assert engine["environment"]["VLLM_API_KEY"] == gw_env["ENGINE_API_KEY"], name
        assert "ports" not in engine, name


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


@pytest.mark.parametrize("scenario", sorted(s for s in SCENARIOS if SCENARIOS[s].get("engines", {}).get("enabled", 1)))
def test_chart_engines_take_calls_from_the_gateway_only(helm: str, tmp_path: Path, scenario: str) -> None:
    values = SCENARIOS[scenario]
    docs = render(helm, tmp_path, values)
    engine, deployment = one(docs, "StatefulSet"), one(docs, "Deployment")
    (policy,) = by_kind(docs, "NetworkPolicy")
    spec = policy["spec"]
    assert _selects(spec["podSelector"]["matchLabels"], pod_labels(engine))
    assert spec["policyTypes"] == ["Ingress"]
    (rule,) = spec["ingress"]
    (peer,) = rule["from"]
    assert set(peer) == {"podSelector"}  # pods of this namespace, no namespaceSelector / ipBlock
    assert _selects(peer["podSelector"]["matchLabels"], pod_labels(deployment))
    assert not _selects(peer["podSelector"]["matchLabels"], pod_labels(engine))
    assert not _selects(peer["podSelector"]["matchLabels"], one(docs, "Job")["spec"]["template"]["metadata"]["labels"])
    (vllm,) = engine["spec"]["template"]["spec"]["containers"]
    assert rule["ports"] == [{"protocol": "TCP", "port": int(flag(vllm["args"], "--port") or 0)}]
    # The engines require the key the gateway sends: one Secret entry, ENGINE_API_KEY, read by both.
    (key,) = [e for e in vllm["env"] if e["name"] == "VLLM_API_KEY"]
    ref = key["valueFrom"]["secretKeyRef"]
    gw_secrets = [e["secretRef"]["name"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"]
                  if "secretRef" in e]  # fmt: skip
    assert ref["key"] == "ENGINE_API_KEY" and [ref["name"]] == gw_secrets
    assert flag(vllm["args"], "--api-key") is None  # not in the process list or vLLM's args log
    for secret in by_kind(docs, "Secret"):
        assert secret["stringData"]["ENGINE_API_KEY"] == values["secrets"]["engineApiKey"]


def test_chart_engine_policy_takes_extra_peers_and_can_be_off(helm: str, tmp_path: Path) -> None:
    prometheus = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    docs = render(helm, tmp_path, _merge(REQUIRED, {"networkPolicy": {"engineIngressFrom": [prometheus]}}))
    rules = one(docs, "NetworkPolicy")["spec"]["ingress"]
    assert [r["from"] for r in rules][1] == [prometheus]
    assert not by_kind(render(helm, tmp_path, _merge(REQUIRED, {"networkPolicy": {"enabled": False}})), "NetworkPolicy")
    with pytest.raises(subprocess.CalledProcessError) as exc:  # engines without a key: refused
        render(helm, tmp_path, _merge(REQUIRED, {"secrets": {"engineApiKey": ""}}))
    assert "secrets.engineApiKey" in exc.value.stderr


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_chart_metrics_and_proxies(helm: str, tmp_path: Path, scenario: str, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = render(helm, tmp_path, SCENARIOS[scenario])
    deployment = one(docs, "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    s = gateway_settings(docs, monkeypatch)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": s.server.port, "metrics": s.metrics.port} and s.metrics.host == "0.0.0.0"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(s.metrics.port) and annotations["prometheus.io/path"] == "/metrics"
    services = {x["metadata"]["name"]: x for x in by_kind(docs, "Service")}
    api = services[deployment["metadata"]["name"]]
    assert [p["targetPort"] for p in api["spec"]["ports"]] == ["http"]  # the API's Service never shows /metrics
    metrics = services[deployment["metadata"]["name"] + "-metrics"]
    assert metrics["spec"]["type"] == "ClusterIP" and [p["targetPort"] for p in metrics["spec"]["ports"]] == ["metrics"]
    assert _selects(metrics["spec"]["selector"], pod_labels(deployment))
    assert s.server.forwarded_allow_ips not in {"", "*"}
