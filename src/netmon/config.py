"""Typed settings: one YAML file, overridden by ``NETMON_*`` environment variables.

Precedence, highest first: environment (``NETMON_STORAGE__RAW_RETENTION=14d``; ``__``
separates nesting levels), the YAML file, built-in defaults. Secrets (the database password,
the token pepper) are accepted only from the environment or from a file named in the config,
never inline, so a config file can be committed and shared.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import platformdirs
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from netmon.durations import Duration
from netmon.errors import ConfigError

__all__ = [
    "AlertSettings",
    "ApiSettings",
    "DatabaseSettings",
    "InventorySettings",
    "LabSettings",
    "LogSettings",
    "NetBoxSettings",
    "PollerSettings",
    "Role",
    "Settings",
    "StorageSettings",
    "WriterSettings",
    "load_settings",
]

ENV_PREFIX = "NETMON_"
CONFIG_ENV = "NETMON_CONFIG"
DEFAULT_CONFIG_NAMES = ("netmon.yaml", "netmon.yml")

SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseSettings(_Section):
    url: str | None = Field(
        default=None,
        description="postgresql://user@host:port/dbname. Empty: run the embedded PostgreSQL.",
    )
    password: SecretStr | None = Field(
        default=None, description="Only from NETMON_DATABASE__PASSWORD; never in the file."
    )
    password_file: Path | None = None
    pool_min: int = Field(default=10, ge=1, le=1000)
    pool_max: int = Field(default=30, ge=1, le=1000)
    connect_timeout: Duration = timedelta(seconds=5)
    command_timeout: Duration = timedelta(seconds=60)
    sslmode: SslMode | None = None
    sslrootcert: Path | None = None
    sslcert: Path | None = None
    sslkey: Path | None = None

    @field_validator("url")
    @classmethod
    def _url_is_postgres(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("postgres", "postgresql"):
            raise ValueError("expected a postgresql:// URL")
        return value

    def resolved_password(self) -> str | None:
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_file is not None:
            try:
                return self.password_file.read_text().strip()
            except OSError as exc:
                raise ConfigError(
                    f"database.password_file: cannot read {self.password_file}: {exc.strerror}"
                ) from exc
        return None


class StorageSettings(_Section):
    partition_interval: Duration = Field(
        default=timedelta(days=1), description="Width of one raw-sample partition."
    )
    premake: Duration = Field(
        default=timedelta(days=7), description="How far ahead partitions are created."
    )
    raw_retention: Duration = timedelta(days=30)
    rollup_5m_retention: Duration = timedelta(days=180)
    rollup_1h_retention: Duration = timedelta(days=730)
    rollup_lateness: Duration = Field(
        default=timedelta(minutes=2),
        description="A 5-minute bucket is rolled up this long after it closes.",
    )
    maintenance_interval: Duration = timedelta(minutes=5)
    lock_timeout: Duration = Field(
        default=timedelta(milliseconds=50),
        description="Longest a partition DDL may wait for a lock before it retries later.",
    )
    max_future: Duration = Field(
        default=timedelta(days=1),
        description="Samples further in the future than this are rejected (device clock).",
    )

    @field_validator("partition_interval")
    @classmethod
    def _divides_days(cls, value: timedelta) -> timedelta:
        seconds = int(value.total_seconds())
        if seconds < 3600 or (86400 % seconds and seconds % 86400):
            raise ValueError("expected whole hours dividing a day, or whole days (e.g. 6h, 1d, 7d)")
        return value


class WriterSettings(_Section):
    batch_size: int = Field(
        default=50_000,
        ge=1,
        le=1_000_000,
        description="Flush at this many samples (or after flush_interval, if sooner). "
        "COPY throughput grows with batch size: 120k samples/s at 5,000, 190k at 100,000.",
    )
    flush_interval: Duration = timedelta(milliseconds=200)
    connections: int = Field(default=2, ge=1, le=16, description="Parallel COPY streams.")
    spool_dir: Path | None = Field(default=None, description="Default: <data_dir>/spool")
    spool_max_bytes: int = Field(default=1 << 30, ge=1 << 20)
    retry_interval: Duration = timedelta(seconds=1)
    write_deadline: Duration = Field(
        default=timedelta(seconds=5),
        description="A batch not stored within this time goes to the spool and the database "
        "counts as down until it answers again (replayed in order then, exactly once).",
    )
    queue_limit: int = Field(
        default=200_000,
        ge=1,
        le=10_000_000,
        description="Samples waiting for a flush at most; past it, what waits goes to the "
        "spool at once (a poll never waits on the database).",
    )
    publish: bool = Field(
        default=True,
        description="Publish committed samples and events to the API's live feeds "
        "(PostgreSQL NOTIFY); off saves a little write time where nobody watches.",
    )


class PollerSettings(_Section):
    inventory: Path = Field(
        default=Path("inventory"),
        description="Nornir SimpleInventory folder: hosts.yaml, groups.yaml, defaults.yaml.",
    )
    interval: Duration = Field(
        default=timedelta(seconds=60),
        description="Default poll interval; a group or host overrides it with poll_interval.",
    )
    max_in_flight: int = Field(
        default=2000,
        ge=1,
        le=5000,
        description="Most polls at once. A poll mostly waits on the network, and polls in "
        "flight are devices per second times how long a poll takes: 5,000 devices every "
        "60 s whose polls take 15 s (500 ms more each way) need 1,250. Threads are made "
        "only as needed.",
    )
    jitter: Duration = Field(
        default=timedelta(seconds=1),
        description="Random delay added to each poll, so polls of one phase do not align.",
    )
    tasks: list[str] = Field(
        default_factory=lambda: ["system", "interfaces", "resources"],
        description="Tasks for hosts whose inventory names none (data: tasks: [...]).",
    )
    task_modules: list[str] = Field(
        default_factory=list,
        description="Importable modules whose __all__ names more tasks (besides netmon.tasks).",
    )
    stop_timeout: Duration = Field(
        default=timedelta(seconds=30),
        description="How long a graceful stop waits for polls in flight.",
    )
    netconf_sessions: int = Field(
        default=64,
        ge=1,
        le=5000,
        description="NETCONF sessions kept open at most (two threads each). A device keeps "
        "its session from poll to poll while there is room; with more NETCONF devices than "
        "this, the least recently used session is closed to open another.",
    )
    netconf_idle_timeout: Duration = Field(
        default=timedelta(minutes=5),
        description="A NETCONF session unused this long is closed (keep it above the interval).",
    )


class SecretRef(_Section):
    """A secret by reference: ``{env: NAME}`` or ``{file: PATH}``, exactly one."""

    env: str | None = None
    file: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _reference(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError("secrets are not accepted inline; use {env: NAME} or {file: PATH}")
        if isinstance(value, dict):  # a dump of a SecretRef holds the unset one as None
            value = {k: v for k, v in value.items() if v is not None}
        if not isinstance(value, dict) or len(value) != 1 or not {"env", "file"} & set(value):
            raise ValueError("expected {env: NAME} or {file: PATH}")
        return value

    def reveal(self, key: str) -> str:
        """The secret's value; ConfigError naming ``key`` and the reference, not the value."""
        if self.env is not None:
            value = os.environ.get(self.env)
            if not value:
                raise ConfigError(f"{key}: environment variable {self.env} is not set")
            return value
        assert self.file is not None
        try:
            return self.file.expanduser().read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{key}: cannot read {self.file}: {exc.strerror}") from exc


FilterValue = str | int | bool | list[str | int]

# NetBox device status -> what netmon does with the device.
DEFAULT_STATUS_MAP: dict[str, str] = {
    "active": "active",
    "planned": "unpolled",
    "staged": "unpolled",
    "offline": "muted",
    "failed": "muted",
    "decommissioning": "retired",
    "inventory": "retired",
}


class NetBoxSettings(_Section):
    url: str = Field(description="NetBox's base URL, e.g. https://netbox.example.net.")
    token: SecretRef = Field(
        description="API token by reference. v2 tokens (nbt_<key>.<secret>, NetBox 4.5+) are "
        "sent as 'Bearer', v1 tokens (40 hex characters) as 'Token'."
    )
    verify_tls: bool | Path = Field(
        default=True, description="Verify NetBox's certificate (true), or against this CA file."
    )
    page_size: int = Field(default=250, ge=1, le=500, description="Objects per page (limit).")
    timeout: Duration = Field(default=timedelta(seconds=30), description="Per HTTP request.")
    retries: int = Field(
        default=3,
        ge=0,
        le=10,
        description="Retries of a request that failed to connect or "
        "got a 5xx or 429 answer, with exponential backoff.",
    )
    filters: dict[str, FilterValue] = Field(
        default_factory=dict,
        description="NetBox query parameters selecting the devices to monitor, e.g. "
        "{site: lab-ams, tag: monitored, status: [active, offline], cf_monitor: true}. "
        "Any filter NetBox's /api/dcim/devices/ takes.",
    )
    virtual_machines: bool = Field(default=True, description="Monitor virtual machines too.")
    vm_filters: dict[str, FilterValue] | None = Field(
        default=None,
        description="Query parameters for /api/virtualization/virtual-machines/ (default: "
        "the same as filters).",
    )
    custom_fields: list[str] = Field(
        default_factory=list, description="Custom fields copied to the device's labels."
    )
    platform_map: dict[str, str] = Field(
        default_factory=dict,
        description="NetBox platform slug -> netmon platform (netmiko device type), e.g. "
        "{ios-xe: cisco_xe}. A platform not listed is taken as its slug.",
    )
    status_map: dict[str, Literal["active", "muted", "unpolled", "retired"]] = Field(
        default_factory=lambda: dict(DEFAULT_STATUS_MAP),  # type: ignore[arg-type]
        description="NetBox status -> active (polled, alerted), muted (polled, alerts "
        "silenced), unpolled (kept, not polled) or retired. A status not listed is unpolled.",
    )
    maintenance_tag: str = Field(
        default="maintenance",
        description="A device with this tag is in maintenance: its alerts are silenced "
        "(from maintenance_start to maintenance_end when those custom fields are set).",
    )
    maintenance_start_field: str = "maintenance_start"
    maintenance_end_field: str = "maintenance_end"
    webhook_secret: SecretRef | None = Field(
        default=None,
        description="Secret of the NetBox webhook that calls POST /api/v1/inventory/netbox/"
        "webhook (its X-Hook-Signature is checked). Without it the endpoint answers 404.",
    )
    changes_interval: Duration = Field(
        default=timedelta(seconds=30),
        description="How often the change log is read for changes the webhook did not bring.",
    )
    full_sync_interval: Duration = Field(
        default=timedelta(hours=1), description="A full reconcile this often, and at start."
    )
    write_back: bool = Field(
        default=False,
        description="Write a journal entry on the NetBox device when netmon starts or stops "
        "monitoring it (the token needs write access to journal entries).",
    )
    cables: bool = Field(default=True, description="Store the cables between synced devices.")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected an http(s) URL")
        if parts.username or parts.password:
            raise ValueError("credentials do not belong in the URL; use token")
        return value.rstrip("/")

    @field_validator("changes_interval", "full_sync_interval")
    @classmethod
    def _at_least_a_second(cls, value: timedelta) -> timedelta:
        if value < timedelta(seconds=1):
            raise ValueError("must be at least 1s")
        return value


class InventorySettings(_Section):
    netbox: NetBoxSettings | None = Field(
        default=None,
        description="Take the hosts from NetBox. The poller.inventory folder then gives only "
        "groups.yaml and defaults.yaml (shared credentials); hosts.yaml is not read.",
    )
    poller_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="This poller's identity: devices are owned per source and poller, so "
        "pollers sharing a database never retire each other's. Default: the host name "
        "(set one per poller when several run on one host).",
    )
    retire_guard: float = Field(
        default=0.3,
        ge=0.0,
        le=1.0,
        description="A full sync that would retire more than this fraction of the devices "
        "a source holds retires nothing and raises an alert instead (1: no guard).",
    )
    purge_after: Duration = Field(
        default=timedelta(days=30),
        description="`netmon devices purge` deletes devices retired longer than this.",
    )


class LabSettings(_Section):
    enabled: bool = False
    devices: int = Field(default=20, ge=1, le=5000)
    interfaces: int | None = Field(default=None, ge=1, le=1000)
    base_port: int = Field(default=16100, ge=0, le=65000)
    ssh: bool = Field(
        default=True,
        description="NETCONF and CLI devices over SSH (every 4th from lab-0002 and lab-0003).",
    )


Role = Literal["viewer", "operator", "admin"]


class ApiSettings(_Section):
    host: str = Field(default="127.0.0.1", description="Listen address of `netmon api`/`run`.")
    port: int = Field(default=8080, ge=0, le=65535)
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Processes of `netmon api`, sharing the port (SO_REUSEPORT).",
    )
    enabled: bool = Field(default=True, description="Serve the API inside `netmon run`.")
    nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="CPU niceness of the API processes `netmon run` starts: under load the "
        "kernel serves the poller first (0: the same priority).",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Origins allowed by CORS (e.g. https://noc.example.net); none by default.",
    )
    rate_limit: int = Field(
        default=6000, ge=0, description="Requests per minute per token (0: unlimited)."
    )
    max_body_bytes: int = Field(default=1 << 20, ge=1024, le=64 << 20)
    range_max: Duration = Field(
        default=timedelta(days=400), description="Longest time span of a range query."
    )
    series_max: int = Field(
        default=200, ge=1, le=100_000, description="Most series one metrics query may return."
    )
    metrics_public: bool = Field(
        default=False,
        description="Serve /metrics without a token (for a scraper on a LAN). Device samples "
        "are then on it only if metrics_device_samples is set to true explicitly.",
    )
    ready_timeout: Duration = Field(
        default=timedelta(seconds=2),
        description="/health/ready answers within this: its checks run together under it, "
        "and a check still running then fails as timed out.",
    )
    ready_db_timeout: Duration = Field(
        default=timedelta(seconds=1.5),
        description="A database round trip slower than this fails /health/ready "
        "(slower than normal but within it is ready); capped by ready_timeout.",
    )
    metrics_device_samples: bool = Field(
        default=True,
        description="Also export the latest device samples on /metrics (one time series "
        "per netmon series with a recent sample), each token its sites' devices only. On a "
        "public /metrics (metrics_public) only when set to true explicitly.",
    )
    ws_queue: int = Field(
        default=1000, ge=1, le=1_000_000, description="Messages buffered per WebSocket client."
    )
    ws_max_clients: int = Field(
        default=5000,
        ge=1,
        le=100_000,
        description="Live-feed WebSocket clients per API process; one more is refused "
        "(close code 1013).",
    )
    ws_max_clients_per_token: int = Field(
        default=20,
        ge=1,
        le=100_000,
        description="Live-feed WebSocket clients one token may hold open at once, per API "
        "process; one more is refused (close code 1013).",
    )
    ws_compression: bool = Field(
        default=False,
        description="Offer permessage-deflate to WebSocket clients. It costs about 50 KB of "
        "zlib state per client and a compression of every message for every client.",
    )
    ws_max_subscriptions: int = Field(
        default=100, ge=1, le=10_000, description="Filters one WebSocket client may hold."
    )
    token_pepper: SecretStr | None = Field(
        default=None,
        description="Extra secret mixed into token hashes; only from NETMON_API__TOKEN_PEPPER.",
    )
    token_pepper_file: Path | None = None
    token_cache: Duration = Field(
        default=timedelta(seconds=5),
        description="How long a checked token is trusted before the database is asked again "
        "(a revoked token stops working within this time).",
    )
    # Limits of the HTTP server, enforced before the app (and so before authentication):
    # api/http_limits.py.
    max_connections: int = Field(
        default=10_000,
        ge=16,
        le=1_000_000,
        description="Open connections (HTTP and WebSocket) per API process; one more is "
        "answered 503 and closed at once. Never more than the process's open-file limit "
        "less 256.",
    )
    max_connections_per_client: int = Field(
        default=0,
        ge=0,
        le=1_000_000,
        description="Open connections per client address per API process; one more is "
        "answered 503 and closed. 0: no such cap (behind a reverse proxy every client has "
        "the proxy's address).",
    )
    max_header_bytes: int = Field(
        default=128 * 1024,
        ge=1024,
        le=1 << 20,
        description="Request line and header fields together; a longer head is answered 431 "
        "(414 while still in the URL) and the connection closed.",
    )
    max_headers: int = Field(
        default=100, ge=8, le=10_000, description="Header fields per request; more: 431."
    )
    max_url_bytes: int = Field(
        default=96 * 1024,
        ge=256,
        le=1 << 20,
        description="Request target (path and query string); longer: 414. At most "
        "max_header_bytes. The default holds the longest query the API's document allows, "
        "percent-encoded (about 73 KB: 50 devices, 20 metrics, 10 labels).",
    )
    header_timeout: Duration = Field(
        default=timedelta(seconds=10),
        ge=timedelta(milliseconds=100),
        le=timedelta(minutes=10),
        description="A client must have sent a whole request head this long after it "
        "connected or after the previous response, else 408 and the connection is closed "
        "(closed without an answer if nothing of a request came).",
    )
    keepalive_timeout: Duration = Field(
        default=timedelta(seconds=5),
        ge=timedelta(seconds=1),
        le=timedelta(hours=1),
        description="An idle connection between requests is closed after this long "
        "(whole seconds).",
    )
    body_timeout: Duration = Field(
        default=timedelta(seconds=30),
        ge=timedelta(milliseconds=100),
        le=timedelta(hours=1),
        description="A request body must have arrived this long after its head, else 408 "
        "and the connection is closed; time the app takes to read it does not count.",
    )

    @field_validator("max_url_bytes")
    @classmethod
    def _url_within_head(cls, value: int, info: ValidationInfo) -> int:
        head = info.data.get("max_header_bytes")
        if head is not None and value > head:
            raise ValueError(f"must be at most max_header_bytes ({head})")
        return value

    @property
    def device_samples_exported(self) -> bool:
        """Whether /metrics carries device samples. On by default for scrapes with a
        token (each sees its sites' devices); a public /metrics names every site's devices
        to anyone who can reach it, so there only when the operator set
        metrics_device_samples: true in so many words, not by the default."""
        if not self.metrics_device_samples:
            return False
        return not self.metrics_public or "metrics_device_samples" in self.model_fields_set

    def resolved_pepper(self) -> bytes:
        if self.token_pepper is not None:
            return self.token_pepper.get_secret_value().encode()
        if self.token_pepper_file is not None:
            try:
                return self.token_pepper_file.read_bytes().strip()
            except OSError as exc:
                raise ConfigError(
                    f"api.token_pepper_file: cannot read {self.token_pepper_file}: {exc.strerror}"
                ) from exc
        return b""


class WebhookSettings(_Section):
    allow: list[str] = Field(
        default_factory=list,
        description="Where webhooks may go (SSRF guard): IP networks ('10.0.0.0/8', "
        "'127.0.0.1/32') and host names ('nsp.example.net', '*.noc.example.net'). A URL "
        "whose host, or any address it resolves to, is not allowed is refused when the "
        "subscription is made and again before every delivery. Empty: no webhooks.",
    )
    timeout: Duration = Field(default=timedelta(seconds=10), description="Per delivery attempt.")
    retry_initial: Duration = Field(
        default=timedelta(seconds=5), description="First pause after a failed attempt."
    )
    retry_max: Duration = Field(
        default=timedelta(hours=1), description="Longest pause between attempts (doubling)."
    )
    retry_for: Duration = Field(
        default=timedelta(hours=25),
        description="How long a message is retried before it is dead-lettered.",
    )
    concurrency: int = Field(
        default=4, ge=1, le=256, description="Subscriptions delivered to in parallel."
    )


class AlertSettings(_Section):
    enabled: bool = Field(
        default=True,
        description="Evaluate rules in the ingest stream and deliver notifications "
        "(in `netmon run` and `netmon poller`).",
    )
    rules_file: Path | None = Field(
        default=None,
        description="YAML with `rules:` and `silences:` (maintenance windows). Unset: the "
        "built-in rules (device unreachable, interface down, utilisation, poll failing).",
    )
    flap_window: Duration = Field(
        default=timedelta(minutes=10), description="Window in which state changes are counted."
    )
    flap_threshold: int = Field(
        default=6,
        ge=2,
        le=1000,
        description="State changes within flap_window that mark an alert flapping; it is "
        "stable again below half of it.",
    )
    group_wait: Duration = Field(
        default=timedelta(seconds=30), description="Default for new webhook subscriptions."
    )
    group_interval: Duration = Field(default=timedelta(minutes=5))
    repeat_interval: Duration = Field(default=timedelta(hours=4))
    direct_delivery: bool = Field(
        default=True,
        description="While the database is away, write alert changes to an on-disk outbox "
        "(data_dir/alert-spool) and send their notifications to the webhooks last read.",
    )
    spool_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    database_down_notify_after: Duration | None = Field(
        default=timedelta(seconds=30),
        description="Send 'netmon: cannot reach the database' to the cached webhooks after "
        "the database has been away this long (resolved when it is back); unset or 0: never.",
    )
    webhooks: WebhookSettings = WebhookSettings()


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    data_dir: Path = Field(default_factory=lambda: Path(platformdirs.user_data_dir("netmon")))
    database: DatabaseSettings = DatabaseSettings()
    storage: StorageSettings = StorageSettings()
    writer: WriterSettings = WriterSettings()
    poller: PollerSettings = PollerSettings()
    inventory: InventorySettings = InventorySettings()
    lab: LabSettings = LabSettings()
    api: ApiSettings = ApiSettings()
    alerts: AlertSettings = AlertSettings()
    log: LogSettings = LogSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's content arrives through init_settings (see load_settings), so the
        # environment must come first to override it.
        return (env_settings, init_settings)

    @property
    def spool_dir(self) -> Path:
        return self.writer.spool_dir or self.data_dir / "spool"

    @property
    def poller_id(self) -> str:
        """Who owns the devices this process polls (see InventorySettings.poller_id)."""
        return self.inventory.poller_id or socket.gethostname()


_SECRET_KEYS = {("database", "password"), ("api", "token_pepper")}


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}:{where}: not valid YAML: {problem}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    for section, key in _SECRET_KEYS:
        if isinstance(data.get(section), dict) and key in data[section]:
            env = f"{ENV_PREFIX}{section.upper()}__{key.upper()}"
            raise ConfigError(
                f"{path}: {section}.{key}: secrets are not accepted in the config file; "
                f"set {env} or {section}.{key}_file"
            )
    database = data.get("database")
    url = database.get("url") if isinstance(database, dict) else None
    if isinstance(url, str) and urlsplit(url).password:
        raise ConfigError(
            f"{path}: database.url: the URL holds a password; remove it and set "
            f"{ENV_PREFIX}DATABASE__PASSWORD or database.password_file"
        )
    return data


def _origin(loc: tuple[int | str, ...], path: Path | None) -> str:
    env = ENV_PREFIX + "__".join(str(part).upper() for part in loc)
    if env in os.environ:
        return f"environment variable {env}"
    return str(path) if path else "defaults"


def _describe(error: ValidationError, path: Path | None) -> str:
    lines = []
    for item in error.errors():
        loc = tuple(item["loc"])
        key = ".".join(str(part) for part in loc) or "(top level)"
        if item["type"] == "extra_forbidden":
            reason = "unknown key (check the spelling against netmon.example.yaml)"
        else:
            reason = item["msg"].removeprefix("Value error, ")
            if "input" in item and not isinstance(item["input"], dict) and "password" not in key:
                reason += f" (got {item['input']!r})"
        lines.append(f"{_origin(loc, path)}: {key}: {reason}")
    return "\n".join(lines)


def find_config_file(explicit: Path | None = None) -> Path | None:
    """The config file to read: ``--config``, else ``$NETMON_CONFIG``, else ./netmon.yaml."""
    if explicit is not None:
        return explicit
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    for name in DEFAULT_CONFIG_NAMES:
        if Path(name).is_file():
            return Path(name)
    return None


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Read, merge and validate the configuration; raise ConfigError naming file and key."""
    config_path = find_config_file(path)
    data = _read_yaml(config_path) if config_path else {}
    data.update(overrides)
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, config_path)) from exc
