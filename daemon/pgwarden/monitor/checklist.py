"""The strategy's production checklist as checks: ``pgwarden check``.

The strategy's list, item by item, and where each is decided:

======================================  ====================================================
Backup automation configured            config: ``backup.enabled`` and its schedule (here)
Backup restore tested                   catalog: a passed restore drill within the verify
                                        schedule's interval (+ grace); the strategy's
                                        quarterly minimum otherwise (here)
Connection pooling enabled (if needed)  live: > 10 connections sustained, no pooler
                                        (:mod:`.dbchecks`)
Indexes on frequently queried columns   live: ``pg_stat_user_tables`` (:mod:`.dbchecks`)
SSL enabled for remote connections      live: ``ssl``, ``listen_addresses``, the DSN's
                                        ``sslmode``, ``pg_hba.conf`` (:mod:`.dbchecks`)
Credentials in environment variables    config: no password in the file or in a DSN (here)
======================================  ====================================================

and beyond it: connection headroom, the target's database and roles against their
``CONNECTION LIMIT`` (:mod:`.connlimits`), the monitoring role's privileges, pgvector (extension and
every vector column against the ~1M guidance, :mod:`.pgvector`), and pg_dump/pg_restore
versions against the server.

:func:`run_checklist` returns :class:`~.verdicts.CheckResult` items; the command fails (exit 1)
when any item is ``fail``.  It reads the catalog but never creates one: a missing SQLite
catalog means no drill was ever recorded.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from pgwarden.catalog import VERIFY_STATUSES, Catalog, DrillStatus, VerificationRecord, open_catalog
from pgwarden.config import Config, Credentials, TargetConfig
from pgwarden.config import cron as cronexpr
from pgwarden.config.names import SUB_TARGET_SEP
from pgwarden.errors import PgwardenError
from pgwarden.monitor.dbchecks import POOLING_GAP_S, POOLING_SAMPLES, database_checks
from pgwarden.monitor.verdicts import CheckResult, Status

#: the strategy: "Test restore quarterly" -- the longest gap tolerated without a passed drill
QUARTER = timedelta(days=92)
_FIRES_FOR_INTERVAL = 6


def human(delta: timedelta) -> str:
    seconds = max(delta.total_seconds(), 0.0)
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size * (2 if unit == "days" else 1):
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


# -- credentials -----------------------------------------------------------------------------


def credentials_check(config: Config) -> CheckResult:
    """No password in the config file (a key or inside a DSN / the catalog URL)."""
    found: list[str] = []
    sources: dict[str, list[str]] = {}

    def inspect(what: str, dsn: str | None, creds: Credentials) -> None:
        if dsn is not None and conninfo_to_dict(dsn).get("password"):
            found.append(f"{what}.dsn")
        if creds.password is not None:
            found.append(f"{what}.password")
        source = (
            "password_env"
            if creds.password_env
            else "password_file"
            if creds.password_file
            else "password_credential"
            if creds.password_credential
            else "password (plaintext)"
            if creds.password is not None
            else ".pgpass, peer or trust"
        )
        sources.setdefault(source, []).append(what)

    for t in config.targets:
        inspect(f"targets[{t.name}]", t.dsn, t.credentials)
        if t.verify.dsn is not None:
            inspect(f"targets[{t.name}].verify", t.verify.dsn, t.verify.credentials)
    for b in config.pgbouncers:
        inspect(f"pgbouncer[{b.name}]", b.dsn, b.credentials)
    if config.daemon.catalog_url:
        try:
            if make_url(config.daemon.catalog_url).password:
                found.append("daemon.catalog_url")
        except ArgumentError:
            pass
    if found:
        return CheckResult(
            "credentials",
            "fail",
            f"passwords written in {config.source.name}: {', '.join(found)}; move them to "
            "password_env, password_file, password_credential (systemd) or .pgpass",
        )
    used = "; ".join(f"{source}: {', '.join(names)}" for source, names in sources.items())
    return CheckResult(
        "credentials", "pass", f"no password in the config file ({used or 'no connections'})"
    )


# -- backups ---------------------------------------------------------------------------------


def schedule_interval(expression: str, now: datetime, tz: str) -> timedelta:
    """The longest gap between the next few fire times of a cron expression."""
    fires = [cronexpr.next_fire(expression, now, tz)]
    for _ in range(_FIRES_FOR_INTERVAL - 1):
        fires.append(cronexpr.next_fire(expression, fires[-1], tz))
    return max(b - a for a, b in itertools.pairwise(fires))


def backup_automation(config: Config, target: TargetConfig, now: datetime) -> CheckResult:
    b, r = target.backup, target.retention
    if not b.enabled:
        return CheckResult(
            "backup.automation",
            "fail",
            f"scheduled backups are disabled (targets[{target.name}].backup.enabled = false)",
            target.name,
        )
    tz = config.daemon.timezone
    next_run = cronexpr.next_fire(b.schedule, now, tz)
    every = schedule_interval(b.schedule, now, tz)
    detail = (
        f"pg_dump ({b.format}) on '{b.schedule}' {tz}, every {human(every)}, next "
        f"{next_run.isoformat(timespec='minutes')}; kept {r.keep_days} days, at least "
        f"{r.min_keep}"
    )
    status: Status = "pass"
    if every > timedelta(days=1, hours=1):
        status, detail = "warn", detail + "; the strategy backs up production daily"
    if r.keep_days < 7:
        status, detail = "warn", detail + "; the strategy keeps backups 7 days minimum"
    return CheckResult("backup.automation", status, detail, target.name)


def _drills(catalog: Catalog, target: TargetConfig) -> list[VerificationRecord]:
    """The target's drills, newest first; a whole-server target's drill rotates over its
    databases (``<target>/<database>``): the newest of any of theirs counts."""
    names = [target.name]
    if target.whole_server:
        prefix = f"{target.name}{SUB_TARGET_SEP}"
        names = [t for t in catalog.targets() if t.startswith(prefix)]
    drills = [d for n in names for d in catalog.list_verifications(target=n, limit=50)]
    return sorted(drills, key=lambda d: d.started_at, reverse=True)


def restore_tested(
    config: Config, target: TargetConfig, catalog: Catalog | None, why: str, now: datetime
) -> CheckResult:
    """A passed restore drill recent enough for the verify schedule (quarterly at worst)."""

    def result(status: Status, detail: str) -> CheckResult:
        return CheckResult("backup.restore_tested", status, detail, target.name)

    if catalog is None:
        return result("fail" if why.startswith("no catalog") else "unknown", why)
    try:
        drills = _drills(catalog, target)
    except PgwardenError as exc:
        return result("unknown", f"cannot read the catalog: {exc}")
    finished = [d for d in drills if d.status in VERIFY_STATUSES]
    passed = next((d for d in finished if d.status == DrillStatus.PASSED), None)
    if finished and finished[0].status == DrillStatus.FAILED:
        newest = finished[0]
        when = (newest.finished_at or newest.started_at).isoformat(timespec="minutes")
        return result("fail", f"the newest restore drill ({when}) failed: {newest.error or ''}")
    if passed is None:
        return result("fail", f"no restore drill has passed yet (pgwarden verify {target.name})")
    age = now - (passed.finished_at or passed.started_at)
    v = target.verify
    if v.enabled:
        every = schedule_interval(v.schedule, now, config.daemon.timezone)
        allowed = every + min(timedelta(days=1), every / 2)
        plan = f"drills every {human(every)} ('{v.schedule}')"
    else:
        allowed, plan = QUARTER, "automatic drills are disabled"
    detail = f"the last passed restore drill finished {human(age)} ago; {plan}"
    if age <= allowed:
        return result("warn" if not v.enabled else "pass", detail)
    if age <= QUARTER:
        return result("warn", detail + "; it is overdue")
    return result("fail", detail + "; the strategy requires a tested restore every quarter")


def _open_catalog(config: Config) -> tuple[Catalog | None, str]:
    url = config.daemon.effective_catalog_url
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        return None, f"invalid catalog URL: {exc}"
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        path = Path(parsed.database)
        if not path.exists():
            return None, f"no catalog at {path}: no backup or restore drill was ever recorded"
    try:
        return open_catalog(url), ""
    except PgwardenError as exc:
        return None, f"cannot open the catalog: {exc}"


# -- all of it -------------------------------------------------------------------------------


def run_checklist(
    config: Config,
    target: str | None = None,
    *,
    now: datetime | None = None,
    samples: int = POOLING_SAMPLES,
    gap_s: float = POOLING_GAP_S,
    sleep: Callable[[float], Any] | None = None,
) -> list[CheckResult]:
    """Every item for every target (or the one named); raises ``NotFoundError`` for a bad name."""
    now = now or datetime.now(UTC)
    targets = (config.target(target),) if target else config.targets
    results = [credentials_check(config)]
    if not config.targets:
        results.append(CheckResult("targets", "warn", "no [[targets]] configured"))
    catalog, why = _open_catalog(config) if targets else (None, "")
    extra: dict[str, Any] = {"sleep": sleep} if sleep is not None else {}
    try:
        for t in targets:
            results.append(backup_automation(config, t, now))
            results.append(restore_tested(config, t, catalog, why, now))
            results += database_checks(config, t, samples=samples, gap_s=gap_s, **extra)
    finally:
        if catalog is not None:
            catalog.close()
    return results
