"""Building :class:`~pgwarden.config.Config` from decoded TOML, one section at a time.

Each ``_section`` function reads its table through a :class:`~pgwarden.config.reader.Reader`
(which records every problem with its key path and returns defaults meanwhile) and returns the
frozen dataclass; :func:`build` assembles them and the cross-section rules (unique names,
plaintext passwords only in a private file).  Pure: no I/O.
"""

from __future__ import annotations

from pathlib import Path

from pgwarden.config import notify, offsite_build, pgdump_args, rates, serverwide
from pgwarden.config.basic_auth import auth_user, auth_users, bcrypt_hash
from pgwarden.config.model import (
    BACKUP_FORMATS,
    BACKUP_PRIORITIES,
    COMPRESSIONS,
    LOG_FORMATS,
    LOG_LEVELS,
    ROW_COUNT_MODES,
    AppPool,
    BackupSettings,
    Config,
    Credentials,
    DaemonConfig,
    MetricsConfig,
    MigrationSettings,
    MonitorConfig,
    PgBouncerConfig,
    PoolSettings,
    RetentionSettings,
    Secret,
    SqlCheck,
    StorageConfig,
    TargetConfig,
    VerifySettings,
)
from pgwarden.config.reader import Reader, SubReader


def build(root: Reader, source: Path, world_readable: bool) -> Config | None:
    daemon = _daemon(root.section("daemon"))
    metrics = _metrics(root.section("metrics"))
    monitor = _monitor(root.section("monitor"))
    storage = _storage(root.section("storage"))
    plaintext_ok = daemon.allow_plaintext_passwords if daemon else False
    offsite = offsite_build.destinations(root, plaintext_ok)
    tz = daemon.timezone if daemon else "UTC"
    targets = [_target(sub, plaintext_ok, tz) for sub in root.table_array("targets")]
    names = [t.name for t in targets if t is not None]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        root.error("targets", f"target name {dup!r} is used more than once")
    offsite_build.check_targets(root, targets, offsite)
    notices = notify.destinations(root, plaintext_ok, names, world_readable)
    bouncers = [_pgbouncer(sub, plaintext_ok) for sub in root.table_array("pgbouncer")]
    root.finish()
    catalog_secret = bool(
        daemon and daemon.catalog_url and root.url_has_password(daemon.catalog_url)
    )
    catalog_secret = catalog_secret or offsite_build.any_inline_secret(offsite)
    if plaintext_ok and world_readable and (catalog_secret or _any_plaintext(targets, bouncers)):
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
        offsite=offsite,
        notify=notices,
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
    if (
        out.catalog_url
        and r.url_has_password(out.catalog_url)
        and not out.allow_plaintext_passwords
    ):
        r.error(
            "catalog_url",
            "the URL contains a password; give it to libpq instead (~/.pgpass or PGPASSFILE of "
            "the daemon's user) or set daemon.allow_plaintext_passwords",
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
        basic_auth_user=auth_user(r, "basic_auth_user", r.opt_str("basic_auth_user")),
        basic_auth_password_hash=bcrypt_hash(r, "basic_auth_password_hash"),
        basic_auth_users=auth_users(r.section("basic_auth_users")),
    )
    if (out.tls_cert_file is None) != (out.tls_key_file is None):
        r.error("tls_key_file", "tls_cert_file and tls_key_file go together")
    if (out.basic_auth_user is None) != (out.basic_auth_password_hash is None):
        r.error(
            "basic_auth_password_hash", "basic_auth_user and basic_auth_password_hash go together"
        )
    if out.basic_auth_user is not None and out.basic_auth_users:
        r.error("basic_auth_users", "use basic_auth_users or basic_auth_user, not both")
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
    backup = _backup(r.section("backup"), tz)
    retention = _retention(r.section("retention"), tz)
    verify = _verify(r.section("verify"), plaintext_ok, tz)
    migrations = _migrations(r.section("migrations"), plaintext_ok)
    pools = _pools(r)
    offsite = offsite_build.target_offsite(r)
    databases, exclude = serverwide.read_selection(r)
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
        pools=pools,
        migrations=migrations,
        offsite=offsite,
        databases=databases,
        exclude_databases=exclude,
    )


def _backup(b: SubReader, tz: str) -> BackupSettings:
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
        stall_timeout=b.number("stall_timeout", bd.stall_timeout, minimum=0),
        priority=b.choice("priority", bd.priority, BACKUP_PRIORITIES),
        max_rate=rates.read_max_rate(b),
    )
    if (why := pgdump_args.refusal(backup.extra_args)) is not None:  # overrides pgwarden's own
        b.error("extra_args", why)
    _check_compression(b, backup)
    rates.check_cap(b, backup)
    b.finish()
    return backup


def _check_compression(b: SubReader, backup: BackupSettings) -> None:
    """gzip's levels stop at 9; plain backups are gzip (or uncompressed), never zstd."""
    gzip_used = backup.compression == "gzip" or (
        backup.format == "plain" and backup.compression == "auto"
    )
    if gzip_used and backup.compression_level is not None and backup.compression_level > 9:
        b.error("compression_level", f"gzip levels are 0..9 (got {backup.compression_level})")
    if backup.format == "plain" and backup.compression == "zstd":
        b.error("compression", "plain backups are gzip-compressed (.sql.gz) for stock tools")


def _retention(rr: SubReader, tz: str) -> RetentionSettings:
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
    return retention


def _verify(v: SubReader, plaintext_ok: bool, tz: str) -> VerifySettings:
    vd = VerifySettings()
    vdsn = v.dsn("dsn", required=False)
    vcreds = _credentials(v, plaintext_ok, "dsn", vdsn)
    checks = tuple(_sql_check(c) for c in v.table_array("checks"))
    verify = VerifySettings(
        enabled=v.flag("enabled", vd.enabled),
        schedule=v.cron("schedule", vd.schedule, tz),
        dsn=vdsn,
        credentials=vcreds,
        jobs=v.integer("jobs", vd.jobs, minimum=1, maximum=64),
        after_backup=v.flag("after_backup", vd.after_backup),
        random_older=v.flag("random_older", vd.random_older),
        checks=checks,
        stall_timeout=v.number("stall_timeout", vd.stall_timeout, minimum=0),
        split_tables=v.flag("split_tables", vd.split_tables),
        priority=v.choice("priority", vd.priority, BACKUP_PRIORITIES),
    )
    v.finish()
    return verify


def _sql_check(c: SubReader) -> SqlCheck:
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
    return check


def _migrations(m: SubReader, plaintext_ok: bool) -> MigrationSettings:
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
        m.error(
            "url_scheme",
            f"must be a postgresql URL scheme such as postgresql+psycopg "
            f"(got {migrations.url_scheme!r})",
        )
    m.finish()
    return migrations


def _pools(r: SubReader) -> tuple[AppPool, ...]:
    """``[[targets.pools]]``: each application's pool, one entry per application."""
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
    return tuple(pools)


def _pgbouncer(r: SubReader, plaintext_ok: bool) -> PgBouncerConfig | None:
    name = r.name("name")
    dsn = r.dsn("dsn", required=True)
    creds = _credentials(r, plaintext_ok, "dsn", dsn)
    r.finish()
    if name is None or dsn is None:
        return None
    return PgBouncerConfig(name=name, dsn=dsn, credentials=creds)
