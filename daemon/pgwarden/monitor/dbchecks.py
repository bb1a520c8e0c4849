"""The checklist items that look at a live database: pooling, headroom, monitoring role,
indexes, SSL, pgvector, and the client tools' versions.

:func:`database_checks` connects to one target through a one-connection engine
(``application_name = pgwarden-check``, ``monitor.statement_timeout``), runs every item in its
own transaction, and turns an item that cannot be decided into ``unknown`` with the reason.

Thresholds (module constants, written down here because they are judgement calls):

* **pooling** -- the strategy: pooling is needed past :data:`POOLING_THRESHOLD` (10) concurrent
  connections.  ``check`` samples ``pg_stat_activity`` :data:`POOLING_SAMPLES` times,
  :data:`POOLING_GAP_S` seconds apart, and calls the connections to the target's database
  (pgwarden's own excluded) *sustained* when the smallest sample is above the threshold.  A
  pooler is in front when the DSN is the Supabase pooler (``*.pooler.supabase.com``, or port
  6543 on ``*.supabase.co``) or when a configured ``[[pgbouncer]]`` lists the database in
  ``SHOW DATABASES``.  The advice is PgBouncer on a VPS, the Supabase pooler on Supabase.
* **headroom** -- fail when the configured application pools on the server can open more
  connections than the server's usable slots (unless a pooler is in front); warn from 80 %
  saturation now, fail from 95 %.
* **indexes** -- a table read by at least :data:`HEAVY_SEQ_SCANS` sequential scans of on
  average :data:`ROWS_PER_SEQ_SCAN` rows or more, with index scans under a tenth of them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import sqlalchemy

from pgwarden.config import Config, PoolSettings, TargetConfig
from pgwarden.errors import PgwardenError, describe
from pgwarden.monitor import pgvector
from pgwarden.monitor.connections import Activity, read_activity, target_database
from pgwarden.monitor.connlimits import limit_checks, read_limits
from pgwarden.monitor.engines import ServerKey
from pgwarden.monitor.pgbouncer import connect_admin, show
from pgwarden.monitor.sampler import SAMPLE_ERRORS
from pgwarden.monitor.verdicts import CheckResult, Status
from pgwarden.pg.binaries import find_tool
from pgwarden.pg.conninfo import ConnSpec, dsn_params
from pgwarden.pg.engine import make_engine
from pgwarden.pg.server import format_version_num

APPLICATION_NAME = "pgwarden-check"
POOLING_THRESHOLD = 10
POOLING_SAMPLES = 3
POOLING_GAP_S = 1.0
HEAVY_SEQ_SCANS = 50
ROWS_PER_SEQ_SCAN = 1000
LOCAL_HOSTS = frozenset({"localhost", "::1"})
SECURE_SSLMODES = frozenset({"require", "verify-ca", "verify-full"})

_HEAVY_SCANS_SQL = sqlalchemy.text(
    """
    SELECT schemaname, relname, seq_scan, seq_tup_read, coalesce(idx_scan, 0)
      FROM pg_stat_user_tables
     WHERE seq_scan >= :scans AND seq_tup_read >= seq_scan * :rows
       AND coalesce(idx_scan, 0) * 10 < seq_scan
     ORDER BY seq_tup_read DESC
     LIMIT 5
    """
)
_SSL_SQL = sqlalchemy.text(
    """
    SELECT current_setting('ssl'), current_setting('listen_addresses'),
           (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())
    """
)
_ROLE_SQL = sqlalchemy.text(
    """
    SELECT current_user,
           coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = current_user), false)
           OR pg_has_role(current_user, 'pg_read_all_stats', 'USAGE')
    """
)
_HBA_SQL = sqlalchemy.text(
    "SELECT line_number, address FROM pg_hba_file_rules WHERE type = 'host' AND error IS NULL"
)


# -- pooling ---------------------------------------------------------------------------------


def supabase_kind(host: str, port: str) -> str | None:
    """``"pooler"`` for the Supabase pooler, ``"direct"`` for a direct Supabase host, else None."""
    host = host.lower().rstrip(".")
    if host == "pooler.supabase.com" or host.endswith(".pooler.supabase.com"):
        return "pooler"
    if host.endswith(".supabase.co"):
        return "pooler" if port == "6543" else "direct"
    return None


def find_pooler(config: Config, target: TargetConfig) -> tuple[str | None, list[str]]:
    """Who pools this target's connections, if anyone; and PgBouncers that could not be asked."""
    params = dsn_params(target.dsn)
    if supabase_kind(params.get("host", ""), params.get("port", "")) == "pooler":
        return "the Supabase pooler", []
    database = target_database(target)
    problems = []
    for bouncer in config.pgbouncers:
        try:
            with connect_admin(bouncer) as conn:
                rows = show(conn, "DATABASES")
        except SAMPLE_ERRORS as exc:
            problems.append(f"PgBouncer {bouncer.name}: {describe(exc)}")
            continue
        if any(database in (row.get("name"), row.get("database")) for row in rows):
            return f"PgBouncer {bouncer.name}", problems
    return None, problems


def pooling_verdict(
    counts: list[int], pooler: str | None, supabase: str | None, problems: list[str]
) -> tuple[Status, str]:
    sustained, peak = min(counts), max(counts)
    seen = f"{sustained}-{peak}" if sustained != peak else str(peak)
    if pooler is not None:
        return "pass", f"{seen} connections; they go through {pooler}"
    if sustained <= POOLING_THRESHOLD:
        tail = f" ({'; '.join(problems)})" if problems else ""
        return "pass", (
            f"{seen} concurrent connections (<= {POOLING_THRESHOLD}): the applications' own "
            f"SQLAlchemy pools are enough{tail}"
        )
    advice = (
        "use the Supabase pooler (the *.pooler.supabase.com connection string, transaction "
        "mode on port 6543)"
        if supabase is not None
        else "put PgBouncer in front of PostgreSQL (pool_mode = transaction) and point the "
        "applications at it"
    )
    return "warn", (
        f"{sustained} concurrent connections sustained (> {POOLING_THRESHOLD}) and no pooler "
        f"in front: {advice}"
    )


def _own(app: str) -> bool:
    return app.startswith("pgwarden")


# -- SSL -------------------------------------------------------------------------------------


def is_local(address: str) -> bool:
    address = address.strip().strip("[]")
    return (
        not address
        or address.startswith(("/", "@", "127."))
        or address.lower() in LOCAL_HOSTS
        or address in ("samehost",)
    )


def ssl_verdict(
    *,
    ssl_on: bool,
    listen_addresses: str,
    host: str,
    sslmode: str,
    encrypted: bool,
    plain_hba: list[str] | None,
) -> tuple[Status, str]:
    """The SSL item from the server's settings and how pgwarden itself connects."""
    listening = [a.strip() for a in listen_addresses.split(",") if a.strip()]
    remote_listen = [a for a in listening if not is_local(a)]
    if remote_listen and not ssl_on:
        return "fail", (
            f"listen_addresses = '{listen_addresses}' accepts remote connections but ssl = off: "
            "passwords and data travel in clear text (ssl = on, hostssl in pg_hba.conf)"
        )
    if not is_local(host) and sslmode not in SECURE_SSLMODES:
        if not encrypted:
            return "fail", (
                f"pgwarden reaches {host} without encryption (sslmode={sslmode}): set "
                "sslmode=verify-full in the DSN and enable ssl on the server"
            )
        return "warn", (
            f"the connection to {host} is encrypted, but sslmode={sslmode} would fall back to "
            "clear text silently: set sslmode=verify-full (or require)"
        )
    if remote_listen and plain_hba:
        return "warn", (
            f"ssl = on, but pg_hba.conf accepts non-SSL connections ({', '.join(plain_hba)}): "
            "use hostssl for remote addresses"
        )
    if not remote_listen:
        return "pass", f"listens only locally (listen_addresses = '{listen_addresses}')"
    return "pass", f"ssl = on; pgwarden connects with sslmode={sslmode}"


def _ssl(conn: sqlalchemy.Connection, spec: ConnSpec) -> tuple[Status, str]:
    with conn.begin():
        ssl_setting, listen, encrypted = conn.execute(_SSL_SQL).one()
        plain: list[str] | None = None
        try:
            with conn.begin_nested():
                plain = [
                    f"line {line}: {address or 'all'}"
                    for line, address in conn.execute(_HBA_SQL).all()
                    if not is_local(str(address or "all"))
                ]
        except sqlalchemy.exc.DBAPIError:  # pg_hba_file_rules is for superusers only
            plain = None
    params = spec.params()
    return ssl_verdict(
        ssl_on=ssl_setting == "on",
        listen_addresses=str(listen),
        host=params.get("host") or params.get("hostaddr") or os.environ.get("PGHOST", ""),
        sslmode=params.get("sslmode") or os.environ.get("PGSSLMODE", "prefer"),
        encrypted=bool(encrypted),
        plain_hba=plain,
    )


# -- the other items -------------------------------------------------------------------------


def _limits(
    config: Config, target: TargetConfig, activity: Activity, pooler: str | None
) -> tuple[Status, str]:
    key = ServerKey.of(target.dsn)
    pools = [p for t in config.targets if ServerKey.of(t.dsn) == key for p in t.pools]
    capacity = sum(p.capacity for p in pools)
    usable, total = activity.usable, activity.total
    ratio = total / usable if usable else 0.0
    head = (
        f"{total} of {usable} usable connections in use ({ratio:.0%}; max_connections "
        f"{activity.max_connections} minus {activity.max_connections - usable} reserved)"
    )
    if capacity > usable and pooler is None:
        return "fail", (
            f"the configured pools can open {capacity} connections but the server allows "
            f"{usable}: at peak, requests fail with 'too many clients' ({head})"
        )
    if ratio >= 0.95:
        return "fail", head
    if ratio >= 0.8:
        return "warn", head
    return "pass", head + (f"; configured pools can open {capacity}" if pools else "")


def _indexes(conn: sqlalchemy.Connection) -> tuple[Status, str]:
    with conn.begin():
        rows = conn.execute(
            _HEAVY_SCANS_SQL, {"scans": HEAVY_SEQ_SCANS, "rows": ROWS_PER_SEQ_SCAN}
        ).all()
    if not rows:
        return "pass", "no table is read mostly by large sequential scans"
    tables = ", ".join(
        f"{schema}.{name} ({seq} seq scans, ~{read // max(seq, 1):,} rows each, {idx} index scans)"
        for schema, name, seq, read, idx in rows
    )
    return "warn", f"sequential scans without index use: {tables}; index the filtered columns"


def _tools(target: TargetConfig, version_num: int) -> tuple[Status, str]:
    major = version_num // 10000
    version = format_version_num(version_num)
    found = []
    for name in ("pg_dump", "pg_restore"):
        try:
            tool = find_tool(name, min_major=major, bin_dir=target.bin_dir, server_version=version)
        except PgwardenError as exc:
            return "fail", str(exc)
        found.append(f"{tool.name} {tool.version}")
    return "pass", f"{' and '.join(found)} can handle PostgreSQL {version}"


def _guard(
    results: list[CheckResult], check: str, target: str, fn: Callable[[], tuple[Status, str]]
) -> None:
    try:
        status, detail = fn()
    except SAMPLE_ERRORS as exc:
        status, detail = "unknown", f"could not check: {describe(exc)}"
    results.append(CheckResult(check, status, detail, target))


def database_checks(
    config: Config,
    target: TargetConfig,
    *,
    samples: int = POOLING_SAMPLES,
    gap_s: float = POOLING_GAP_S,
    sleep: Callable[[float], Any] = time.sleep,
) -> list[CheckResult]:
    """Every live-database item for ``target``; one connection, :data:`APPLICATION_NAME`."""
    try:
        spec = ConnSpec.from_target(target)
        engine = make_engine(
            spec,
            PoolSettings(pool_size=1, max_overflow=0),
            statement_timeout_s=config.monitor.statement_timeout,
            application_name=APPLICATION_NAME,
        )
    except SAMPLE_ERRORS as exc:
        return [CheckResult("server.reachable", "fail", describe(exc), target.name)]
    try:
        with engine.connect() as conn:
            return _on_connection(
                conn, config, target, spec, samples=samples, gap_s=gap_s, sleep=sleep
            )
    except SAMPLE_ERRORS as exc:
        detail = f"cannot connect or lost the connection: {describe(exc)}"
        return [CheckResult("server.reachable", "fail", detail, target.name)]
    finally:
        engine.dispose()


def _on_connection(
    conn: sqlalchemy.Connection,
    config: Config,
    target: TargetConfig,
    spec: ConnSpec,
    *,
    samples: int,
    gap_s: float,
    sleep: Callable[[float], Any],
) -> list[CheckResult]:
    name = target.name
    started = time.monotonic()
    first = read_activity(conn)
    version = format_version_num(first.version_num)
    reachable = CheckResult("server.reachable", "pass", f"PostgreSQL {version}", name)
    pooler, problems = find_pooler(config, target)
    inventory: list[pgvector.Inventory] = []
    items: list[CheckResult] = []
    _guard(items, "connections.limits", name, partial(_limits, config, target, first, pooler))
    try:  # CONNECTION LIMIT of the target's database and roles (monitor.connlimits)
        user = [u] if (u := dsn_params(target.dsn).get("user")) else []
        items += limit_checks(first, read_limits(conn), target_database(target), user, name)
    except SAMPLE_ERRORS as exc:
        items.append(CheckResult("connections.database_limit", "unknown", describe(exc), name))
    _guard(items, "monitoring.role", name, partial(_role, conn, first))
    _guard(items, "indexes", name, partial(_indexes, conn))
    _guard(items, "ssl", name, partial(_ssl, conn, spec))
    _guard(items, "pgvector.extension", name, partial(_extension, conn, inventory))
    for column in inventory[0].columns if inventory else ():
        status, detail = pgvector.judge_column(column)
        items.append(CheckResult("pgvector.column", status, detail, name, column.name))
    _guard(items, "pg_dump", name, partial(_tools, target, first.version_num))
    # the pooling samples are spread over the time the other items took, and then some
    activities = [first]
    for i in range(1, samples):
        sleep(max(started + i * gap_s - time.monotonic(), 0.0))
        activities.append(read_activity(conn))
    database = target_database(target)
    counts = [
        sum(g.count for g in a.groups if g.database == database and not _own(g.application))
        for a in activities
    ]
    params = dsn_params(target.dsn)
    supabase = supabase_kind(params.get("host", ""), params.get("port", ""))
    status, detail = pooling_verdict(counts, pooler, supabase, problems)
    return [reachable, CheckResult("connections.pooling", status, detail, name), *items]


def _role(conn: sqlalchemy.Connection, activity: Activity) -> tuple[Status, str]:
    """Superuser or a member of ``pg_read_all_stats`` (``pg_monitor`` includes it)."""
    with conn.begin():
        user, privileged = conn.execute(_ROLE_SQL).one()
    if privileged and not activity.hidden:
        return "pass", f"{user} sees every session in pg_stat_activity"
    hidden = f" ({activity.hidden} hidden now)" if activity.hidden else ""
    return "warn", (
        f"{user} cannot see other roles' sessions in detail{hidden}: GRANT pg_monitor TO {user}"
    )


def _extension(conn: sqlalchemy.Connection, out: list[pgvector.Inventory]) -> tuple[Status, str]:
    inventory = pgvector.read_inventory(conn)
    out.append(inventory)
    return pgvector.judge_extension(inventory)
