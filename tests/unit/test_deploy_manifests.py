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
from collections.abc import Iterator
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
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from gateway.app import create_app
from gateway.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
CHART = DEPLOY / "helm" / "lora-gateway"
GATEWAY_IMAGE = "lora-gateway"
NAMESPACE = "llm"
REQUIRED = {
    "secrets": {"databaseUrl": "postgresql://gw:pw@db.example:5432/gw", "adminToken": "t0ken"},
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
    """Compose's ${VAR:-default} with the defaults (a required ${VAR:?msg} becomes 'set-VAR')."""
    return _INTERPOLATION.sub(lambda m: m.group(2) if "?" not in m.group(0) else f"set-{m.group(1)}", value)


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def gateway_services() -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose()["services"].items() if str(s.get("image", "")).startswith(GATEWAY_IMAGE)}


def engine_services() -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose()["services"].items() if str(s.get("image", "")).startswith("vllm/")}


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
    s = settings_from({k: interpolate(str(v)) for k, v in gw["environment"].items()}, monkeypatch)
    assert urlsplit(s.engine.url).hostname in engine_services()
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


def test_compose_engines_see_what_the_gateway_hands_them(monkeypatch: pytest.MonkeyPatch) -> None:
    gw = compose()["services"]["gateway"]
    s = settings_from({k: interpolate(str(v)) for k, v in gw["environment"].items()}, monkeypatch)
    gw_mounts = mounts(gw)
    data_volume = gw_mounts[str(s.storage.data_dir)]
    engines = engine_services()
    assert len(engines) == 2
    for name, engine in engines.items():
        args = [interpolate(a) for a in engine["command"]]
        assert flag(args, "--enable-lora") == ""
        assert flag(args, "--max-lora-rank") == str(s.engine.max_lora_rank), name
        assert flag(args, "--served-model-name"), name
        assert flag(args, "--port") == str(urlsplit(s.engine.url).port)
        assert engine["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
        engine_mounts = mounts(engine)
        # Adapters are stored under GATEWAY_DATA_DIR and loaded by absolute path: same volume, same path.
        assert engine_mounts.get(str(s.storage.data_dir)) == data_volume, name
        # The base model: the engine's --model is the folder the gateway reads config.json from.
        assert flag(args, "--model") == str(s.adapters.base_model_dir)
        assert engine_mounts[str(s.adapters.base_model_dir)] == gw_mounts[str(s.adapters.base_model_dir)]
        gpus = engine["deploy"]["resources"]["reservations"]["devices"]
        assert gpus and "gpu" in gpus[0]["capabilities"]


def test_prometheus_and_grafana_config() -> None:
    prom = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    assert jobs["gateway"]["metrics_path"] in app_paths()
    (sd,) = jobs["gateway"]["dns_sd_configs"]
    gateway_port = int(compose()["services"]["gateway"]["environment"]["GATEWAY_PORT"])
    assert sd["names"] == ["gateway"] and sd["port"] == gateway_port
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
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {p["name"] for p in service["spec"]["ports"]}
        assert {e["path"] for e in monitor["spec"]["endpoints"]} <= app_paths()


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_chart_gateway_settings(helm: str, tmp_path: Path, scenario: str, monkeypatch: pytest.MonkeyPatch) -> None:
    values = SCENARIOS[scenario]
    docs = render(helm, tmp_path, values)
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = pod_env(docs, container)
    assert set(env) - setting_names() == set()
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
        assert s.engine.url == values["externalEngine"]["url"]
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
    # ENGINE_URL names the first engine pod through the headless Service of the StatefulSet.
    headless = next(x for x in by_kind(docs, "Service") if x["metadata"]["name"] == engine["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"].items() <= pod_labels(engine).items()
    url = urlsplit(s.engine.url)
    first_pod = f"{engine['metadata']['name']}-0.{headless['metadata']['name']}"
    assert url.hostname == f"{first_pod}.{NAMESPACE}.svc.cluster.local"
    assert str(url.port) == flag(args, "--port")


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]


def test_values_file_settings_are_real() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values["gateway"]["env"]) <= setting_names()
