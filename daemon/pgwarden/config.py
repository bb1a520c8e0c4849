"""Configuration: the TOML file parsed once into frozen dataclasses.

This is the only module that reads the configuration file.  ``load()`` parses it, validates
every key (collecting *all* problems, each with its key path, e.g.
``targets[0].retention.keep_days: must be >= 1 (got 0)``) and returns a :class:`Config`.
Validation is pure: no subprocess, no network, no writes.  Unknown keys and wrong types are
errors; a cron expression that cannot fire is an error.

Defaults follow the database strategy: SQLAlchemy pools ``pool_size=5``, ``max_overflow=10``,
``pool_timeout=30``, ``pool_recycle=1800``; backups kept ``keep_days=7``.

Rendering (``config show`` / ``config init``) lives in :mod:`pgwarden.config_render`.
"""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from pgwarden._configcheck import Reader, SubReader
from pgwarden.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("/etc/pgwarden/pgwarden.toml")
CONFIG_ENV = "PGWARDEN_CONFIG"

BACKUP_FORMATS = ("custom", "directory", "plain")
COMPRESSIONS = ("auto", "zstd", "gzip", "none")
ROW_COUNT_MODES = ("exact", "estimate", "off")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("auto", "json", "console")
#: pg_dump options pgwarden sets itself and that ``extra_args`` must not override.
RESERVED_PG_DUMP_OPTIONS = (
    "-f", "--file", "-F", "--format", "-Z", "--compress", "-j", "--jobs", "--snapshot",
    "-d", "--dbname", "-h", "--host", "-p", "--port", "-U", "--username", "-W", "--password",
    "-w", "--no-password", "-C", "--create", "--serializable-deferrable",
)  # fmt: skip


class Secret(str):
    """A string whose ``repr`` and ``str`` never show its value (use ``reveal()``)."""

    __slots__ = ()

    def reveal(self) -> str:
        return str.__str__(self)

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"


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
    basic_auth_user: str | None = None
    basic_auth_password_hash: Secret | None = None

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

    def target(self, name: str) -> TargetConfig:
        for target in self.targets:
            if target.name == name:
                return target
        from pgwarden.errors import NotFoundError

        known = ", ".join(t.name for t in self.targets) or "none"
        raise NotFoundError(f"unknown target {name!r} (configured: {known})")


def default_path() -> Path:
    """The config path from ``$PGWARDEN_CONFIG``, else ``/etc/pgwarden/pgwarden.toml``."""
    env = os.environ.get(CONFIG_ENV)
    return Path(env) if env else DEFAULT_CONFIG_PATH


def load(path: Path | str | None = None) -> Config:
    """Read, parse and validate a config file; raise :class:`ConfigError` listing all problems."""
    file = Path(path) if path is not None else default_path()
    try:
        raw = file.read_bytes()
        mode = file.stat().st_mode
    except OSError as exc:
        raise ConfigError(file, [f"cannot read the file: {exc.strerror}"]) from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(file, [f"not valid TOML: {exc}"]) from exc
    return parse(data, file, world_readable=bool(mode & (stat.S_IROTH | stat.S_IWOTH)))


def parse(data: dict[str, object], source: Path, *, world_readable: bool = False) -> Config:
    """Validate an already-decoded TOML document.  Pure: no I/O."""
    reader = Reader(data)
    config = _build(reader, source, world_readable)
    if reader.errors:
        raise ConfigError(source, reader.errors)
    assert config is not None
    return config


def _build(root: Reader, source: Path, world_readable: bool) -> Config | None:
    daemon = _daemon(root.section("daemon"))
    metrics = _metrics(root.section("metrics"))
    monitor = _monitor(root.section("monitor"))
    storage = _storage(root.section("storage"))
    plaintext_ok = daemon.allow_plaintext_passwords if daemon else False
    targets = []
    for sub in root.table_array("targets"):
        targets.append(_target(sub, plaintext_ok, daemon.timezone if daemon else "UTC"))
    names = [t.name for t in targets if t is not None]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        root.error("targets", f"target name {dup!r} is used more than once")
    bouncers = []
    for sub in root.table_array("pgbouncer"):
        bouncers.append(_pgbouncer(sub, plaintext_ok))
    root.finish()
    if plaintext_ok and world_readable and _any_plaintext(targets, bouncers):
        root.error(
            "daemon.allow_plaintext_passwords",
            "the file holds passwords but is readable by others (chmod 0600 or 0640)",
        )
    if root.errors:
        return None
    assert daemon and metrics and monitor and storage
    return Config(
        source=source,
        daemon=daemon,
        metrics=metrics,
        monitor=monitor,
        storage=storage,
        targets=tuple(t for t in targets if t is not None),
        pgbouncers=tuple(b for b in bouncers if b is not None),
    )


def _any_plaintext(
    targets: list[TargetConfig | None], bouncers: list[PgBouncerConfig | None]
) -> bool:
    creds = [t.credentials for t in targets if t] + [t.verify.credentials for t in targets if t]
    creds += [t.migrations.credentials for t in targets if t]
    creds += [b.credentials for b in bouncers if b]
    return any(c.password is not None for c in creds)


def _daemon(r: SubReader) -> DaemonConfig | None:
    d = DaemonConfig()
    out = DaemonConfig(
        state_dir=r.path("state_dir", d.state_dir),
        socket=r.path("socket", d.socket),
        socket_mode=r.octal_mode("socket_mode", d.socket_mode),
        socket_group=r.opt_str("socket_group"),
        allowed_users=r.str_list("allowed_users"),
        allowed_groups=r.str_list("allowed_groups"),
        max_parallel_jobs=r.integer(
            "max_parallel_jobs", d.max_parallel_jobs, minimum=1, maximum=64
        ),
        shutdown_timeout=r.number("shutdown_timeout", d.shutdown_timeout, minimum=1),
        timezone=r.timezone("timezone", d.timezone),
        jitter=r.integer("jitter", d.jitter, minimum=0, maximum=86400),
        catch_up=r.flag("catch_up", d.catch_up),
        catalog_url=r.opt_str("catalog_url"),
        log_level=r.choice("log_level", d.log_level, LOG_LEVELS),
        log_format=r.choice("log_format", d.log_format, LOG_FORMATS),
        allow_plaintext_passwords=r.flag("allow_plaintext_passwords", False),
    )
    r.finish()
    return out


def _metrics(r: SubReader) -> MetricsConfig | None:
    d = MetricsConfig()
    out = MetricsConfig(
        enabled=r.flag("enabled", d.enabled),
        listen=r.listen_address("listen", d.listen),
        tls_cert_file=r.opt_path("tls_cert_file"),
        tls_key_file=r.opt_path("tls_key_file"),
        basic_auth_user=r.opt_str("basic_auth_user"),
        basic_auth_password_hash=_opt_secret(r.opt_str("basic_auth_password_hash")),
    )
    if (out.tls_cert_file is None) != (out.tls_key_file is None):
        r.error("tls_key_file", "tls_cert_file and tls_key_file go together")
    if (out.basic_auth_user is None) != (out.basic_auth_password_hash is None):
        r.error(
            "basic_auth_password_hash", "basic_auth_user and basic_auth_password_hash go together"
        )
    r.finish()
    return out


def _pool(r: SubReader, keys_prefix: str = "") -> PoolSettings:
    d = PoolSettings()
    return PoolSettings(
        pool_size=r.integer(f"{keys_prefix}pool_size", d.pool_size, minimum=1, maximum=10000),
        max_overflow=r.integer(
            f"{keys_prefix}max_overflow", d.max_overflow, minimum=0, maximum=10000
        ),
        pool_timeout=r.number(f"{keys_prefix}pool_timeout", d.pool_timeout, minimum=0.1),
        pool_recycle=r.integer(f"{keys_prefix}pool_recycle", d.pool_recycle, minimum=-1),
    )


def _monitor(r: SubReader) -> MonitorConfig | None:
    d = MonitorConfig()
    pool_reader = r.section("pool")
    pool = _pool(pool_reader)
    pool_reader.finish()
    out = MonitorConfig(
        enabled=r.flag("enabled", d.enabled),
        interval=r.number("interval", d.interval, minimum=0.1, maximum=86400),
        statement_timeout=r.number("statement_timeout", d.statement_timeout, minimum=0.1),
        top_applications=r.integer("top_applications", d.top_applications, minimum=0, maximum=100),
        pool=pool,
    )
    r.finish()
    return out


def _storage(r: SubReader) -> StorageConfig | None:
    d = StorageConfig()
    out = StorageConfig(
        path=r.path("path", d.path),
        min_free_margin=r.number("min_free_margin", d.min_free_margin, minimum=0, maximum=10),
    )
    r.finish()
    return out


def _credentials(r: SubReader, plaintext_ok: bool, dsn_key: str, dsn: str | None) -> Credentials:
    password = r.opt_str("password")
    if password is not None and not plaintext_ok:
        r.error(
            "password",
            "a password in the config file is refused; use password_env, password_file, "
            "password_credential or .pgpass (or set daemon.allow_plaintext_passwords)",
        )
    if dsn is not None and r.dsn_has_password(dsn) and not plaintext_ok:
        r.error(dsn_key, "the DSN contains a password; move it to password_env or password_file")
    creds = Credentials(
        password_env=r.opt_str("password_env"),
        password_file=r.opt_path("password_file"),
        password_credential=r.opt_str("password_credential"),
        password=_opt_secret(password),
    )
    sources = [
        k
        for k, v in (
            ("password_env", creds.password_env),
            ("password_file", creds.password_file),
            ("password_credential", creds.password_credential),
            ("password", creds.password),
        )
        if v is not None
    ]
    if len(sources) > 1:
        r.error(sources[1], f"choose one password source, not {' and '.join(sources)}")
    return creds


def _opt_secret(value: str | None) -> Secret | None:
    return Secret(value) if value is not None else None


def _target(r: SubReader, plaintext_ok: bool, tz: str) -> TargetConfig | None:
    name = r.name("name")
    dsn = r.dsn("dsn", required=True)
    creds = _credentials(r, plaintext_ok, "dsn", dsn)
    bin_dir = r.opt_path("bin_dir")

    b = r.section("backup")
    bd = BackupSettings()
    backup = BackupSettings(
        enabled=b.flag("enabled", bd.enabled),
        schedule=b.cron("schedule", bd.schedule, tz),
        format=b.choice("format", bd.format, BACKUP_FORMATS),
        compression=b.choice("compression", bd.compression, COMPRESSIONS),
        compression_level=b.opt_int("compression_level", minimum=0, maximum=22),
        jobs=b.integer("jobs", bd.jobs, minimum=1, maximum=64),
        row_counts=b.choice("row_counts", bd.row_counts, ROW_COUNT_MODES),
        exact_count_max_bytes=b.integer(
            "exact_count_max_bytes", bd.exact_count_max_bytes, minimum=0
        ),
        vector_probes=b.integer("vector_probes", bd.vector_probes, minimum=0, maximum=100),
        vector_probe_k=b.integer("vector_probe_k", bd.vector_probe_k, minimum=1, maximum=100),
        retries=b.integer("retries", bd.retries, minimum=0, maximum=20),
        retry_backoff=b.number("retry_backoff", bd.retry_backoff, minimum=0),
        timeout=b.opt_number("timeout", minimum=1),
        extra_args=b.str_list("extra_args"),
        dump_globals=b.flag("dump_globals", bd.dump_globals),
    )
    for arg in backup.extra_args:
        option = arg.split("=", 1)[0]
        if option in RESERVED_PG_DUMP_OPTIONS or any(
            arg.startswith(o) and len(o) == 2 for o in RESERVED_PG_DUMP_OPTIONS
        ):
            b.error("extra_args", f"{arg!r} would override an option pgwarden sets itself")
    gzip_used = backup.compression == "gzip" or (
        backup.format == "plain" and backup.compression == "auto"
    )
    if gzip_used and backup.compression_level is not None and backup.compression_level > 9:
        b.error("compression_level", f"gzip levels are 0..9 (got {backup.compression_level})")
    if backup.format == "plain" and backup.compression == "zstd":
        b.error("compression", "plain backups are gzip-compressed (.sql.gz) for stock tools")
    b.finish()

    rr = r.section("retention")
    rd = RetentionSettings()
    retention = RetentionSettings(
        keep_days=rr.integer("keep_days", rd.keep_days, minimum=1, maximum=36500),
        min_keep=rr.integer("min_keep", rd.min_keep, minimum=1, maximum=10000),
        keep_daily=rr.integer("keep_daily", 0, minimum=0, maximum=10000),
        keep_weekly=rr.integer("keep_weekly", 0, minimum=0, maximum=10000),
        keep_monthly=rr.integer("keep_monthly", 0, minimum=0, maximum=10000),
        schedule=rr.opt_cron("schedule", rd.schedule, tz),
    )
    rr.finish()

    v = r.section("verify")
    vd = VerifySettings()
    vdsn = v.dsn("dsn", required=False)
    vcreds = _credentials(v, plaintext_ok, "dsn", vdsn)
    checks = []
    for c in v.table_array("checks"):
        check = SqlCheck(
            name=c.string("name", required=True),
            sql=c.string("sql", required=True),
            min=c.opt_number("min"),
            max=c.opt_number("max"),
            equals=c.opt_scalar("equals"),
        )
        if check.min is None and check.max is None and check.equals is None:
            c.error("min", "a check needs at least one of min, max, equals")
        if check.min is not None and check.max is not None and check.min > check.max:
            c.error("max", f"must be >= min ({check.min}) (got {check.max})")
        c.finish()
        checks.append(check)
    verify = VerifySettings(
        enabled=v.flag("enabled", vd.enabled),
        schedule=v.cron("schedule", vd.schedule, tz),
        dsn=vdsn,
        credentials=vcreds,
        jobs=v.integer("jobs", vd.jobs, minimum=1, maximum=64),
        after_backup=v.flag("after_backup", vd.after_backup),
        random_older=v.flag("random_older", vd.random_older),
        checks=tuple(checks),
    )
    v.finish()

    m = r.section("migrations")
    md = MigrationSettings()
    mdsn = m.dsn("dsn", required=False)
    migrations = MigrationSettings(
        project=m.opt_path("project"),
        alembic_ini=m.string("alembic_ini", md.alembic_ini),
        alembic=m.string("alembic", md.alembic),
        versions=m.opt_path("versions"),
        require_numbered=m.flag("require_numbered", md.require_numbered),
        backup_before=m.flag("backup_before", md.backup_before),
        database_url_env=m.string_or_off("database_url_env", md.database_url_env),
        url_scheme=m.string("url_scheme", md.url_scheme),
        dsn=mdsn,
        credentials=_credentials(m, plaintext_ok, "dsn", mdsn),
        timeout=m.number("timeout", md.timeout, minimum=1),
    )
    if not migrations.url_scheme.startswith("postgres") or "://" in migrations.url_scheme:
        m.error("url_scheme", f"must be a postgresql URL scheme such as postgresql+psycopg "
                              f"(got {migrations.url_scheme!r})")  # fmt: skip
    m.finish()

    pools = []
    for p in r.table_array("pools"):
        pools.append(
            AppPool(
                application=p.string("application", required=True),
                settings=_pool(p),
                processes=p.integer("processes", 1, minimum=1, maximum=10000),
            )
        )
        p.finish()
    apps = [p.application for p in pools]
    for dup in sorted({a for a in apps if apps.count(a) > 1}):
        r.error("pools", f"application {dup!r} is listed more than once")
    r.finish()
    if name is None or dsn is None:
        return None
    return TargetConfig(
        name=name,
        dsn=dsn,
        credentials=creds,
        bin_dir=bin_dir,
        backup=backup,
        retention=retention,
        verify=verify,
        pools=tuple(pools),
        migrations=migrations,
    )


def _pgbouncer(r: SubReader, plaintext_ok: bool) -> PgBouncerConfig | None:
    name = r.name("name")
    dsn = r.dsn("dsn", required=True)
    creds = _credentials(r, plaintext_ok, "dsn", dsn)
    r.finish()
    if name is None or dsn is None:
        return None
    return PgBouncerConfig(name=name, dsn=dsn, credentials=creds)
