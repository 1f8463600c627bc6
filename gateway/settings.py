"""Every setting of the gateway; the only module that reads the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from billing.settings import BillingSettings


class _Base(BaseSettings):
    # hide_input_in_errors: a rejected value may be a secret (a short admin token, a URL with its password).
    model_config = SettingsConfigDict(env_file=None, extra="ignore", populate_by_name=True, hide_input_in_errors=True)


class DatabaseSettings(_Base):
    """PostgreSQL, the only state store."""

    url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL"),
        description="postgresql://… URL; unset means `make run` starts an embedded PostgreSQL.",
    )
    pool_size: int = Field(default=20, validation_alias=AliasChoices("DATABASE_POOL_SIZE"))
    pool_timeout_s: float = Field(default=10.0, validation_alias=AliasChoices("DATABASE_POOL_TIMEOUT"))
    metering_pool_size: int = Field(
        default=6,
        validation_alias=AliasChoices("DATABASE_METERING_POOL_SIZE"),
        description="Connections per process for admissions, rate limits, usage rows and checkpoints "
        "(each group-committed: one connection at a time each).",
    )
    echo: bool = Field(default=False, validation_alias=AliasChoices("DATABASE_ECHO"))

    def async_url(self) -> str:
        """The URL in SQLAlchemy's asyncpg form."""
        if not self.url:
            raise ValueError("DATABASE_URL is not set")
        return to_asyncpg_url(self.url)

    def plain_url(self) -> str:
        """The URL as asyncpg itself takes it (postgresql://…)."""
        return "postgresql://" + self.async_url()[len("postgresql+asyncpg://") :]


class EngineSettings(_Base):
    """The vLLM OpenAI-compatible servers behind the gateway (one, or a pool)."""

    url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("ENGINE_URL"),
        description="Base URL of the vLLM server, e.g. http://127.0.0.1:8100; unset means `make run` starts one.",
    )
    api_key: SecretStr | None = Field(default=None, validation_alias=AliasChoices("ENGINE_API_KEY"))
    max_lora_rank: int = Field(
        default=8,
        validation_alias=AliasChoices("ENGINE_MAX_LORA_RANK"),
        description="The engine's --max-lora-rank (vLLM does not report it over HTTP).",
    )
    connect_timeout_s: float = Field(default=5.0, validation_alias=AliasChoices("ENGINE_CONNECT_TIMEOUT"))
    request_timeout_s: float = Field(default=600.0, validation_alias=AliasChoices("ENGINE_REQUEST_TIMEOUT"))
    max_connections: int = Field(default=512, validation_alias=AliasChoices("ENGINE_MAX_CONNECTIONS"))
    urls: str | None = Field(
        default=None,
        validation_alias=AliasChoices("ENGINE_URLS"),
        description="Comma-separated engine pool, e.g. http://a:8001,http://b:8002; wins over ENGINE_URL.",
    )
    health_interval_s: float = Field(default=2.0, validation_alias=AliasChoices("ENGINE_HEALTH_INTERVAL"))
    health_timeout_s: float = Field(default=2.0, gt=0, validation_alias=AliasChoices("ENGINE_HEALTH_TIMEOUT"))
    health_failures: int = Field(
        default=3,
        ge=1,
        validation_alias=AliasChoices("ENGINE_HEALTH_FAILURES"),
        description="Unanswered health checks in a row before an engine is taken out (refused: at once).",
    )
    load_factor: float = Field(
        default=1.25,
        ge=1.0,
        validation_alias=AliasChoices("ENGINE_LOAD_FACTOR"),
        description="c of bounded-load hashing: an adapter's engine takes it while in-flight < c × average.",
    )
    load_floor: int = Field(
        default=8,
        ge=1,
        validation_alias=AliasChoices("ENGINE_LOAD_FLOOR"),
        description="An engine with fewer requests in flight than this never spills an adapter's traffic.",
    )

    def pool_urls(self) -> list[str]:
        """The engines of the pool: ENGINE_URLS, else ENGINE_URL as a pool of one (trailing slashes dropped)."""
        raw = self.urls.split(",") if self.urls else [self.url or ""]
        urls = [u.strip().rstrip("/") for u in raw]
        return list(dict.fromkeys(u for u in urls if u))


class AdapterSettings(_Base):
    """Limits on tenant adapter uploads."""

    max_upload_bytes: int = Field(default=512 * 1024 * 1024, validation_alias=AliasChoices("ADAPTER_MAX_UPLOAD_BYTES"))
    max_unpacked_bytes: int = Field(
        default=1024 * 1024 * 1024, validation_alias=AliasChoices("ADAPTER_MAX_UNPACKED_BYTES")
    )
    base_model_dir: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("ENGINE_BASE_MODEL_DIR"),
        description="The base model's folder (for its config.json); default: the folder the engine reports.",
    )
    max_concurrent_uploads_per_tenant: int = Field(
        default=2,
        ge=1,
        validation_alias=AliasChoices("ADAPTER_MAX_CONCURRENT_UPLOADS_PER_TENANT"),
        description="Uploads one tenant may have in progress at once, per gateway process (more: 429).",
    )
    max_concurrent_uploads: int = Field(
        default=8,
        ge=1,
        validation_alias=AliasChoices("ADAPTER_MAX_CONCURRENT_UPLOADS"),
        description="Uploads in progress at once over all tenants, per gateway process (more: 429).",
    )
    register_root: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("ADAPTER_REGISTER_ROOT"),
        description=(
            "The folder under which the admin API may register adapters by path (POST /admin/tenants/{id}/adapters);"
            " unset: registration by path is off (tenants upload)."
        ),
    )


class TenantDefaults(_Base):
    """Bounds of every tenant that has no value of its own (admin PATCH /admin/tenants/{id} sets one).

    A tenant's own value wins: null follows these defaults, 0 is unlimited, n > 0 is that bound. Here too,
    0 means unlimited."""

    rpm: int = Field(
        default=600,
        ge=0,
        validation_alias=AliasChoices("TENANT_DEFAULT_RPM"),
        description="Requests per minute of a tenant (all its keys together); 0: unlimited.",
    )
    tpm: int = Field(
        default=200_000,
        ge=0,
        validation_alias=AliasChoices("TENANT_DEFAULT_TPM"),
        description="Tokens per minute of a tenant (prompt + max_tokens reserved, corrected to use); 0: unlimited.",
    )
    max_concurrent: int = Field(
        default=32,
        ge=0,
        validation_alias=AliasChoices("TENANT_DEFAULT_MAX_CONCURRENT"),
        description="Requests of a tenant in flight at once; 0: unlimited.",
    )
    max_deployments: int = Field(
        default=20,
        ge=0,
        validation_alias=AliasChoices("TENANT_MAX_DEPLOYMENTS"),
        description="Live deployments (adapters not deleted, failed ones included) a tenant may hold; 0: unlimited.",
    )
    max_adapter_bytes: int = Field(
        default=2 * 1024**3,
        ge=0,
        validation_alias=AliasChoices("TENANT_MAX_ADAPTER_BYTES"),
        description="Unpacked adapter bytes a tenant's live deployments may hold on disk; 0: unlimited.",
    )
    uploads_per_minute: int = Field(
        default=10,
        ge=0,
        validation_alias=AliasChoices("TENANT_UPLOADS_PER_MINUTE"),
        description="Adapter uploads a tenant may start per minute, refused ones included; 0: unlimited.",
    )

    @staticmethod
    def effective(own: int | None, default: int) -> int | None:
        """A tenant's bound: its own value, else the default; None when that is 0 (unlimited)."""
        value = default if own is None else own
        return value or None


class ServerSettings(_Base):
    host: str = Field(default="127.0.0.1", validation_alias=AliasChoices("GATEWAY_HOST"))
    port: int = Field(default=8000, validation_alias=AliasChoices("GATEWAY_PORT"))
    workers: int = Field(default=1, validation_alias=AliasChoices("GATEWAY_WORKERS"))
    max_body_bytes: int = Field(default=4 * 1024 * 1024, validation_alias=AliasChoices("GATEWAY_MAX_BODY_BYTES"))
    keep_alive_s: int = Field(
        default=75,
        gt=0,
        validation_alias=AliasChoices("GATEWAY_KEEP_ALIVE"),
        description=(
            "Seconds an idle client connection stays open. Keep it above the idle timeout of any load balancer "
            "in front (one that reuses a connection the gateway just closed answers 502): uvicorn's own default "
            "is 5."
        ),
    )
    instance_timeout_s: float = Field(
        default=30.0,
        gt=0,
        validation_alias=AliasChoices("GATEWAY_INSTANCE_TIMEOUT"),
        description="A gateway process silent this long is dead: another settles its open requests.",
    )
    checkpoint_interval_s: float = Field(
        default=1.0,
        ge=0,
        validation_alias=AliasChoices("USAGE_CHECKPOINT_INTERVAL"),
        description=(
            "How often an open stream's running usage is saved (what a crashed process leaves to bill). "
            "0: with every group commit (each chunk's running usage is queued; a commit keeps the latest per "
            "stream), which bills a killed stream to within one commit of what it was sent, at the price of "
            "one row update per stream per commit."
        ),
    )
    cache_ttl_s: float = Field(
        default=5.0,
        ge=0,
        validation_alias=AliasChoices("GATEWAY_CACHE_TTL"),
        description="Seconds a key or adapter lookup is cached in a process (changes drop it at once; 0: off).",
    )
    forwarded_allow_ips: str = Field(
        default="127.0.0.1,::1",
        validation_alias=AliasChoices("GATEWAY_FORWARDED_ALLOW_IPS", "FORWARDED_ALLOW_IPS"),
        description=(
            "Peers whose X-Forwarded-For/-Proto are believed (comma-separated addresses or CIDR networks, * for "
            "any): the reverse proxies in front. Audit rows record the client they name, and cookies are Secure "
            "when they say https. Anyone else's forwarded headers are ignored."
        ),
    )
    limit_concurrency: int = Field(
        default=1024,
        ge=1,
        validation_alias=AliasChoices("GATEWAY_LIMIT_CONCURRENCY"),
        description=(
            "Open connections (idle keep-alive ones included) or requests in progress per worker process past "
            "which uvicorn answers 503 at once instead of serving."
        ),
    )
    max_header_bytes: int = Field(
        default=16 * 1024,
        ge=1024,
        validation_alias=AliasChoices("GATEWAY_MAX_HEADER_BYTES"),
        description=(
            "Largest request head uvicorn's h11 parser buffers. Only the h11 parser has this bound: with httptools "
            "(installed with the gateway, and faster) the head is unbounded, so the proxy in front must bound it."
        ),
    )


ADMIN_TOKEN_MIN_LENGTH = 32


class AdminSettings(_Base):
    token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("GATEWAY_ADMIN_TOKEN"),
        description="Bearer token of the admin API and the first owner's way into the dashboard; at least "
        f"{ADMIN_TOKEN_MIN_LENGTH} characters; unset disables the admin API.",
    )

    @field_validator("token", mode="before")
    @classmethod
    def _long_enough(cls, value: object) -> object:
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if raw == "":
            return None  # `GATEWAY_ADMIN_TOKEN=` in an env file: unset
        if isinstance(raw, str) and len(raw) < ADMIN_TOKEN_MIN_LENGTH:
            raise ValueError(
                f"GATEWAY_ADMIN_TOKEN must be at least {ADMIN_TOKEN_MIN_LENGTH} characters (it has {len(raw)}); "
                "make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        return value


class SessionSettings(_Base):
    """Browser sign-in (dashboard, console): server-side sessions and failed sign-in throttling."""

    idle_minutes: float = Field(
        default=60,
        gt=0,
        validation_alias=AliasChoices("SESSION_IDLE_MINUTES"),
        description="A session unused this long is over.",
    )
    max_hours: float = Field(
        default=12,
        gt=0,
        validation_alias=AliasChoices("SESSION_MAX_HOURS"),
        description="A session is over this long after sign-in, however busy.",
    )
    cookie_secure: Literal["auto", "true", "false"] = Field(
        default="auto",
        validation_alias=AliasChoices("SESSION_COOKIE_SECURE"),
        description="Secure flag of the session and CSRF cookies: auto (when the request came over https), "
        "true (always: set it behind a TLS proxy whose forwarded headers are not trusted) or false.",
    )
    secret: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("SESSION_SECRET"),
        description="Key that signs CSRF tokens, the same in every process; unset: one generated once in "
        "<GATEWAY_DATA_DIR>/session-secret.",
    )
    signin_max_failures: int = Field(
        default=5,
        ge=1,
        validation_alias=AliasChoices("SIGNIN_MAX_FAILURES"),
        description="Failed sign-ins to one account in the window, after which its sign-ins are refused (429).",
    )
    signin_max_failures_per_address: int = Field(
        default=20,
        ge=1,
        validation_alias=AliasChoices("SIGNIN_MAX_FAILURES_PER_ADDRESS"),
        description="Failed sign-ins from one client address in the window, after which its sign-ins are refused.",
    )
    signin_window_minutes: float = Field(
        default=15,
        gt=0,
        validation_alias=AliasChoices("SIGNIN_FAILURE_WINDOW_MINUTES"),
        description="How long a failed sign-in counts.",
    )


class SignupSettings(_Base):
    """Tenants signing themselves up on the console (/console/signup)."""

    mode: Literal["closed", "approval", "open"] = Field(
        default="approval",
        validation_alias=AliasChoices("SIGNUP_MODE"),
        description="closed: only an operator creates tenants; approval: a sign-up waits for an operator to "
        "approve it (dashboard or POST /admin/tenants/{id}/approve); open: active at once, with the trial tokens.",
    )
    per_address_per_hour: int = Field(
        default=5,
        ge=1,
        validation_alias=AliasChoices("SIGNUP_PER_ADDRESS_PER_HOUR"),
        description="Sign-ups from one client address in an hour, after which sign-ups are refused (429).",
    )


class StorageSettings(_Base):
    data_dir: Path = Field(
        default=Path(".data"),
        validation_alias=AliasChoices("GATEWAY_DATA_DIR"),
        description="Folder for adapters, models, the embedded database and logs.",
    )


class MetricsSettings(_Base):
    tenant_labels: bool = Field(
        default=False,
        validation_alias=AliasChoices("METRICS_TENANT_LABELS"),
        description="Add a tenant label to completion and token metrics (mind the cardinality).",
    )
    multiproc_dir: str | None = Field(
        default=None,
        validation_alias=AliasChoices("PROMETHEUS_MULTIPROC_DIR"),
        description="Shared folder for prometheus-client's multiprocess mode (`serve` makes one if unset).",
    )
    host: str = Field(
        default="127.0.0.1",
        validation_alias=AliasChoices("METRICS_HOST"),
        description="Address of the Prometheus listener (its own port, never the API's): 0.0.0.0 in a container.",
    )
    port: int = Field(
        default=9464,
        ge=0,
        le=65535,
        validation_alias=AliasChoices("METRICS_PORT"),
        description="Port of the Prometheus listener; it answers /metrics for every worker process together (0: none).",
    )
    refresh_interval_s: float = Field(
        default=5.0,
        gt=0,
        validation_alias=AliasChoices("METRICS_REFRESH_INTERVAL"),
        description="Seconds between updates of the gauges read from the database (billing backlog, pool use).",
    )


class FineTuningSettings(_Base):
    """Files, uploads, fine-tuning jobs and the trainer."""

    files_tenant_quota_bytes: int = Field(
        default=1024 * 1024 * 1024,
        ge=0,
        validation_alias=AliasChoices("FILES_TENANT_QUOTA_BYTES"),
        description="Bytes of files (training sets, adapter archives) a tenant may keep stored.",
    )
    files_max_bytes: int = Field(
        default=512 * 1024 * 1024,
        gt=0,
        validation_alias=AliasChoices("FILES_MAX_BYTES"),
        description="Largest single file, by `POST /v1/files` or the Uploads API.",
    )
    trainer_model_paths: dict[str, Path] = Field(
        default_factory=dict,
        validation_alias=AliasChoices("TRAINER_MODEL_PATHS"),
        description='Base model folders where the trainer runs, as JSON: {"tiny-base": "/models/tiny-base"}; '
        "default: ENGINE_BASE_MODEL_DIR, else the folder the engine reports.",
    )
    trainer_heartbeat_timeout_s: float = Field(
        default=30.0,
        gt=0,
        validation_alias=AliasChoices("TRAINER_HEARTBEAT_TIMEOUT"),
        description="A training job whose worker has been silent this long is taken over by another worker.",
    )
    trainer_max_attempts: int = Field(
        default=3,
        ge=1,
        validation_alias=AliasChoices("TRAINER_MAX_ATTEMPTS"),
        description="Times a job is started (a worker died mid-job: resumed from its last checkpoint) "
        "before it is failed.",
    )
    max_epochs: int = Field(default=50, ge=1, validation_alias=AliasChoices("FINE_TUNING_MAX_EPOCHS"))
    upload_lifetime_s: float = Field(
        default=3600.0,
        gt=0,
        validation_alias=AliasChoices("UPLOADS_EXPIRE_AFTER"),
        description="Seconds an unfinished upload (Uploads API) lives; then its parts are deleted.",
    )


class Settings(_Base):
    """All settings, one object handed to create_app()."""

    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    admin: AdminSettings = Field(default_factory=AdminSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    adapters: AdapterSettings = Field(default_factory=AdapterSettings)
    billing: BillingSettings = Field(default_factory=BillingSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    tenants: TenantDefaults = Field(default_factory=TenantDefaults)
    sessions: SessionSettings = Field(default_factory=SessionSettings)
    fine_tuning: FineTuningSettings = Field(default_factory=FineTuningSettings)
    signup: SignupSettings = Field(default_factory=SignupSettings)


def to_asyncpg_url(url: str) -> str:
    """postgresql://… or postgres://… → postgresql+asyncpg://…"""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ValueError("DATABASE_URL must start with postgresql://")
