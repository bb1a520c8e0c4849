"""The configuration's shape: frozen dataclasses, their defaults and the legal values.

:func:`pgwarden.config.load` produces a :class:`Config`, validated once (every problem with
its key path, e.g. ``targets[0].retention.keep_days: must be >= 1 (got 0)``); nothing else in
pgwarden reads the TOML file.  Unknown keys and wrong types are errors; a cron expression that
cannot fire is an error.

Defaults follow the database strategy: SQLAlchemy pools ``pool_size=5``, ``max_overflow=10``,
``pool_timeout=30``, ``pool_recycle=1800``; backups kept ``keep_days=7``.

Building each section from the TOML tables lives in :mod:`pgwarden.config.build` (with the
typed readers of :mod:`pgwarden.config.reader`); rendering (``config show`` / ``config init``)
in :mod:`pgwarden.config.render`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import psycopg.conninfo

from pgwarden.config.formats import BackupFormat
from pgwarden.config.names import SUB_TARGET_SEP, target_name_problem
from pgwarden.config.notify import NotifyConfig
from pgwarden.config.offsite import OffsiteConfig
from pgwarden.errors import NotFoundError
from pgwarden.redaction import Secret as Secret  # noqa: PLC0414 - re-exported: its home moved

DEFAULT_CONFIG_PATH = Path("/etc/pgwarden/pgwarden.toml")
CONFIG_ENV = "PGWARDEN_CONFIG"

BACKUP_FORMATS = tuple(f.value for f in BackupFormat)  # custom, directory, plain
#: "auto" and pgwarden.archive.codecs.Codec's values (config sits below archive: not imported)
COMPRESSIONS = ("auto", "zstd", "gzip", "none")
ROW_COUNT_MODES = ("exact", "estimate", "off")
#: auto: low for scheduled and catch-up runs, normal for manual ones (pgwarden.pg.priority)
BACKUP_PRIORITIES = ("auto", "low", "normal")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("auto", "json", "console")
#: pg_dump options pgwarden sets itself and that ``extra_args`` must not override.
RESERVED_PG_DUMP_OPTIONS = (
    "-f",
    "--file",
    "-F",
    "--format",
    "-Z",
    "--compress",
    "-j",
    "--jobs",
    "--snapshot",
    "-d",
    "--dbname",
    "-h",
    "--host",
    "-p",
    "--port",
    "-U",
    "--username",
    "-W",
    "--password",
    "-w",
    "--no-password",
    "-C",
    "--create",
    "--serializable-deferrable",
)


@dataclass(frozen=True)
class Credentials:
    """Where a connection's password comes from; none set means libpq's .pgpass / trust."""

    password_env: str | None = None
    password_file: Path | None = None
    password_credential: str | None = None
    password: Secret | None = None  # only with [daemon] allow_plaintext_passwords


@dataclass(frozen=True)
class PoolSettings:
    """SQLAlchemy pool settings, defaulting to the strategy's values."""

    pool_size: int = 5
    max_overflow: int = 10
    pool_timeout: float = 30.0
    pool_recycle: int = 1800

    @property
    def capacity(self) -> int:
        return self.pool_size + self.max_overflow


@dataclass(frozen=True)
class DaemonConfig:
    state_dir: Path = Path("/var/lib/pgwarden")
    socket: Path = Path("/run/pgwarden/control.sock")
    socket_mode: int = 0o660
    socket_group: str | None = None
    allowed_users: tuple[str, ...] = ()
    allowed_groups: tuple[str, ...] = ()
    max_parallel_jobs: int = 2
    shutdown_timeout: float = 60.0
    timezone: str = "UTC"
    jitter: int = 0
    catch_up: bool = True
    catalog_url: str | None = None
    log_level: str = "info"
    log_format: str = "auto"
    allow_plaintext_passwords: bool = False

    @property
    def effective_catalog_url(self) -> str:
        return self.catalog_url or f"sqlite:///{self.state_dir / 'catalog.db'}"


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = True
    listen: str = "127.0.0.1:9188"
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    basic_auth_user: str | None = None  # one user: the short form of basic_auth_users
    basic_auth_password_hash: Secret | None = None
    basic_auth_users: Mapping[str, Secret] = field(default_factory=dict)  # user -> bcrypt hash

    def auth_users(self) -> dict[str, Secret]:
        """Every basic-auth user and its bcrypt hash (empty: no auth)."""
        users = dict(self.basic_auth_users)
        if self.basic_auth_user is not None and self.basic_auth_password_hash is not None:
            users[self.basic_auth_user] = self.basic_auth_password_hash
        return users

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])


@dataclass(frozen=True)
class MonitorConfig:
    enabled: bool = True
    interval: float = 15.0
    statement_timeout: float = 5.0
    top_applications: int = 10
    pool: PoolSettings = field(default_factory=PoolSettings)


@dataclass(frozen=True)
class StorageConfig:
    path: Path = Path("/var/backups/postgres")
    min_free_margin: float = 0.2


@dataclass(frozen=True)
class BackupSettings:
    enabled: bool = True
    schedule: str = "0 3 * * *"
    format: str = "custom"
    compression: str = "auto"
    compression_level: int | None = None
    jobs: int = 2
    row_counts: str = "exact"
    exact_count_max_bytes: int = 10 * 1024**3
    vector_probes: int = 3
    vector_probe_k: int = 5
    retries: int = 2
    retry_backoff: float = 30.0
    timeout: float | None = None
    extra_args: tuple[str, ...] = ()
    dump_globals: bool = False
    stall_timeout: float = 300.0  # seconds without progress before a dump is cancelled; 0: off
    priority: str = "auto"  # BACKUP_PRIORITIES: CPU nice 10 + I/O best-effort 7 when low
    max_rate: int = 0  # bytes/s of pg_dump output pgwarden reads at most (config.rates); 0: no cap


@dataclass(frozen=True)
class RetentionSettings:
    keep_days: int = 7
    min_keep: int = 3
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    schedule: str | None = "15 4 * * *"


@dataclass(frozen=True)
class SqlCheck:
    name: str
    sql: str
    min: float | None = None
    max: float | None = None
    equals: float | str | None = None


@dataclass(frozen=True)
class VerifySettings:
    enabled: bool = True
    schedule: str = "0 5 * * 0"
    dsn: str | None = None
    credentials: Credentials = field(default_factory=Credentials)
    jobs: int = 2
    after_backup: bool = False
    random_older: bool = False
    checks: tuple[SqlCheck, ...] = ()
    stall_timeout: float = 300.0  # seconds without progress before a drill is cancelled; 0: off
    split_tables: bool = True  # data over `jobs` connections, a table's rows shared between them
    priority: str = "auto"  # BACKUP_PRIORITIES: auto is low for scheduled and after-backup drills


@dataclass(frozen=True)
class AppPool:
    """An application's SQLAlchemy pool, as the application itself configures it."""

    application: str
    settings: PoolSettings = field(default_factory=PoolSettings)
    processes: int = 1

    @property
    def capacity(self) -> int:
        return self.processes * self.settings.capacity


@dataclass(frozen=True)
class MigrationSettings:
    """A target's application migrations (Alembic), guarded by the forward-only policy."""

    project: Path | None = None  # the directory holding alembic.ini; None: no guard
    alembic_ini: str = "alembic.ini"
    alembic: str = "alembic"  # the application's own alembic executable (its virtualenv)
    versions: Path | None = None  # default: read from alembic.ini's script_location
    require_numbered: bool = True  # 001_initial_schema.py, 002_..., as the strategy names them
    backup_before: bool = True  # a pre-migration backup before every upgrade
    database_url_env: str | None = "DATABASE_URL"  # how the app's env.py finds the database
    url_scheme: str = "postgresql"  # e.g. "postgresql+psycopg" for SQLAlchemy's psycopg 3
    dsn: str | None = None  # who migrates (the schema owner); default: the target's dsn
    credentials: Credentials = field(default_factory=Credentials)
    timeout: float = 3600.0


@dataclass(frozen=True)
class TargetConfig:
    name: str
    dsn: str
    credentials: Credentials = field(default_factory=Credentials)
    bin_dir: Path | None = None
    backup: BackupSettings = field(default_factory=BackupSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    verify: VerifySettings = field(default_factory=VerifySettings)
    pools: tuple[AppPool, ...] = ()
    migrations: MigrationSettings = field(default_factory=MigrationSettings)
    offsite: tuple[str, ...] | None = None  # [[offsite]] names; None: every destination
    # a whole-server target (config.serverwide): ("*",) every database, or the names; None: the
    # DSN's database only
    databases: tuple[str, ...] | None = None
    exclude_databases: tuple[str, ...] = ()

    @property
    def whole_server(self) -> bool:
        return self.databases is not None

    def for_database(self, database: str) -> TargetConfig:
        """A whole-server target's sub-target ``<name>/<database>``: the same settings, the
        DSN naming ``database``; its backups, catalog rows and retention are its own.  The
        globals are dumped once per run beside the databases, not into each manifest."""
        return replace(
            self,
            backup=replace(self.backup, dump_globals=False),
            name=f"{self.name}{SUB_TARGET_SEP}{database}",
            dsn=psycopg.conninfo.make_conninfo(self.dsn, dbname=database),
            databases=None,
            exclude_databases=(),
        )


@dataclass(frozen=True)
class PgBouncerConfig:
    name: str
    dsn: str
    credentials: Credentials = field(default_factory=Credentials)


@dataclass(frozen=True)
class Config:
    source: Path
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    targets: tuple[TargetConfig, ...] = ()
    pgbouncers: tuple[PgBouncerConfig, ...] = ()
    offsite: tuple[OffsiteConfig, ...] = ()
    notify: tuple[NotifyConfig, ...] = ()

    def target(self, name: str) -> TargetConfig:
        parent, sep, database = name.partition(SUB_TARGET_SEP)
        for target in self.targets:
            if target.name == name:
                return target
            if sep and target.name == parent and target.whole_server and _database_ok(database):
                return target.for_database(database)
        known = ", ".join(t.name for t in self.targets) or "none"
        raise NotFoundError(f"unknown target {name!r} (configured: {known})")

    def offsite_for(self, target: TargetConfig | str) -> tuple[OffsiteConfig, ...]:
        """The destinations a target's backups are copied to, in config order."""
        t = self.target(target) if isinstance(target, str) else target
        if t.offsite is None:
            return self.offsite
        return tuple(o for o in self.offsite if o.name in t.offsite)

    def destination(self, name: str) -> OffsiteConfig:
        """The ``[[offsite]]`` destination called ``name``."""
        for offsite in self.offsite:
            if offsite.name == name:
                return offsite
        known = ", ".join(o.name for o in self.offsite) or "none"
        raise NotFoundError(f"unknown off-site destination {name!r} (configured: {known})")


def _database_ok(database: str) -> bool:
    return target_name_problem(database) is None
