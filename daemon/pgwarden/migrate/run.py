"""Safe migrate: the strategy's migration workflow for a target's own Alembic project.

:func:`safe_migrate` does, under the target's migration lock (one upgrade at a time):

1. the forward-only guard (:mod:`~pgwarden.migrate.guard`); any error refuses the upgrade
   (:class:`~pgwarden.migrate.outcome.MigrationRefused`) before anything is touched, and the
   files already applied are recorded in the ledger;
2. nothing pending: done, no backup (there is no schema change to protect);
3. with ``backup_before`` (the default): a ``pg_dump`` backup tagged ``pre-migration``
   through :func:`~pgwarden.backup.take.take_backup` -- verified on read-back, described by a
   manifest, kept by retention at least 7 days.  If it fails, nothing is migrated;
4. the application's own ``alembic -c <ini> upgrade head``, in ``project``, through
   :mod:`pgwarden.pg.process` (an argv, never a shell; ``timeout`` seconds at most).  The
   child gets a small environment (``PATH``, ``HOME``, locale, ``PYTHONUNBUFFERED``) plus
   ``database_url_env`` holding the target's URL *with its password* -- the password exists
   nowhere else: not in argv, not in logs (each stderr line is scrubbed of it), not in the
   outcome.  With ``database_url_env = ""`` no URL is passed and ``env.py`` finds its database
   itself;
5. the database's revision is read again: it must be the head, otherwise ``env.py`` migrated
   some other database and the run counts as failed; the newly applied files go into the
   ledger, and the run into its history.

A failed upgrade raises :class:`~pgwarden.migrate.outcome.MigrationFailed` carrying the
outcome: alembic's stderr tail, the revisions before and after, and the pre-migration backup,
which stays in storage.  There is deliberately no downgrade anywhere in pgwarden: to undo a
migration, write a new one (strategy, "Rollback Strategy").
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import deque
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, quote_plus

from pgwarden.backup.take import BackupOutcome, BackupRequest, take_backup
from pgwarden.catalog import Catalog
from pgwarden.config import Config, Secret, TargetConfig
from pgwarden.errors import ConfigError, PgwardenError, UsageError
from pgwarden.logsetup import get_logger, scrub
from pgwarden.migrate.database import DatabaseError, database_url, display_url, read_revisions
from pgwarden.migrate.guard import GuardReport, inspect_project
from pgwarden.migrate.ledger import LedgerStore, UpgradeRecord
from pgwarden.migrate.outcome import (
    AlembicCommand,
    MigrateOutcome,
    MigrationFailed,
    MigrationRefused,
)
from pgwarden.migrate.project import AlembicProject, locate, resolve_alembic
from pgwarden.pg import process
from pgwarden.pg.conninfo import ConnSpec
from pgwarden.storage import Storage

__all__ = ["PRE_MIGRATION_TAG", "child_environment", "plan_command", "safe_migrate"]

log = get_logger("pgwarden.migrate")

PRE_MIGRATION_TAG = "pre-migration"
_INHERITED = frozenset({"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR"})
_DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
_STDOUT_LINES = 20
#: alembic's ``FAILED: ...``, or a traceback's last line (``psycopg.errors.UndefinedTable: ...``)
_ERROR_LINE = re.compile(
    r"^(?:FAILED: |[A-Za-z_]\w*(?:\.\w+)+: |[A-Za-z_]\w*(?:Error|Exception): )"
)


def child_environment(url_env: str | None, url: Secret | None) -> dict[str, str]:
    """What the application's ``alembic`` gets: path, home, locale, and the database URL.

    The daemon's environment is not passed on wholesale: it may hold other targets'
    ``password_env`` variables.
    """
    env = {k: v for k, v in os.environ.items() if k in _INHERITED or k.startswith("LC_")}
    env.setdefault("PATH", _DEFAULT_PATH)
    env["PYTHONUNBUFFERED"] = "1"
    if url_env and url is not None:
        env[url_env] = url.reveal()
    return env


def plan_command(
    config: Config, target: TargetConfig, project: AlembicProject, spec: ConnSpec
) -> tuple[AlembicCommand, dict[str, str]]:
    """The exact alembic command and the child's environment (which holds the password)."""
    settings = target.migrations
    url_env = settings.database_url_env
    scheme = settings.url_scheme
    env = child_environment(url_env, database_url(spec, scheme) if url_env else None)
    executable = resolve_alembic(config, target, settings, env["PATH"])
    command = AlembicCommand(
        argv=(str(executable), "-c", str(project.ini), "upgrade", "head"),
        cwd=project.project,
        env_names=tuple(sorted(env)),
        database_url_env=url_env,
        display_url=display_url(spec, scheme) if url_env else None,
        timeout=settings.timeout,
    )
    return command, env


class _Scrubber:
    """Removes the target's password (as typed and URL-encoded) from free text."""

    def __init__(self, spec: ConnSpec) -> None:
        secret = spec.password.reveal() if spec.password is not None else ""
        forms = {secret, quote(secret, safe=""), quote_plus(secret)} if secret else set()
        self._forms = sorted(forms, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for form in self._forms:
            text = text.replace(form, "***")
        return scrub(text)


class _ScrubbingLogger:
    """A :class:`~pgwarden.pg.process.ToolLogger` that scrubs every value before logging."""

    def __init__(self, scrubber: _Scrubber, **bound: Any) -> None:
        self._scrub = scrubber
        self._log = log.bind(**bound)

    def _clean(self, fields: dict[str, Any]) -> dict[str, Any]:
        return {k: self._scrub(v) if isinstance(v, str) else v for k, v in fields.items()}

    def info(self, event: str, /, *args: Any, **kw: Any) -> Any:
        return self._log.info(event, *args, **self._clean(kw))

    def warning(self, event: str, /, *args: Any, **kw: Any) -> Any:
        return self._log.warning(event, *args, **self._clean(kw))


class _StdoutTail:
    """Keeps the last lines alembic printed on stdout (it normally logs to stderr)."""

    def __init__(self) -> None:
        self._lines: deque[str] = deque(maxlen=_STDOUT_LINES)
        self._partial = b""

    def __call__(self, chunk: bytes) -> None:
        *complete, self._partial = (self._partial + chunk).split(b"\n")
        self._partial = self._partial[-65536:]
        for raw in complete:
            if raw.strip():
                self._lines.append(raw.decode("utf-8", "replace")[:2000])

    def text(self) -> str:
        rest = [self._partial.decode("utf-8", "replace")] if self._partial.strip() else []
        return "\n".join([*self._lines, *rest][-_STDOUT_LINES:])


def migration_spec(target: TargetConfig) -> ConnSpec:
    """Who migrates: ``[targets.migrations] dsn`` (the schema owner, typically) when set, else
    the target's own connection (often a backup role that cannot change the schema)."""
    m = target.migrations
    if m.dsn is not None:
        return ConnSpec.from_dsn(m.dsn, m.credentials, what=f"targets[{target.name}].migrations")
    return ConnSpec.from_target(target)


def safe_migrate(
    target: TargetConfig,
    config: Config,
    catalog: Catalog,
    storage: Storage,
    *,
    dry_run: bool = False,
    cancel: threading.Event | None = None,
) -> MigrateOutcome:
    """Guard, back up, ``alembic upgrade head``, record; see the module docstring.

    ``dry_run`` runs the guard without recording anything and returns the plan (status
    ``planned``): the backup it would take and the exact command.
    """
    project = locate(config, target)
    spec = migration_spec(target)
    store = LedgerStore(config.daemon.state_dir, target.name)
    numbered = target.migrations.require_numbered
    if dry_run:
        report = inspect_project(project, store, spec, require_numbered=numbered, record=False)
        command, _ = plan_command(config, target, project, spec)
        plan = _backup_plan(target, storage, spec) if report.pending else "none: nothing to migrate"
        return MigrateOutcome(
            target=target.name,
            status="planned",
            revision_before=report.database,
            revision_after=report.heads[:1] if report.pending else report.database,
            applied=tuple(p.revision for p in report.pending),
            backup_id=None,
            backup_path=None,
            backup_plan=plan,
            duration_s=0.0,
            command=command,
            report=report,
        )
    with store.lock(timeout=0):
        return _upgrade(target, config, catalog, storage, project, spec, store, cancel)


def _backup_plan(target: TargetConfig, storage: Storage, spec: ConnSpec) -> str:
    if not target.migrations.backup_before:
        return "none: backup_before = false"
    return (
        f"pg_dump of database {spec.dbname or '?'} ({target.backup.format} format) into "
        f"{storage.location}/{target.name}, tagged {PRE_MIGRATION_TAG}, kept at least 7 "
        "days"
    )


def _upgrade(
    target: TargetConfig,
    config: Config,
    catalog: Catalog,
    storage: Storage,
    project: AlembicProject,
    spec: ConnSpec,
    store: LedgerStore,
    cancel: threading.Event | None,
) -> MigrateOutcome:
    started_at = datetime.now(UTC)
    started = time.monotonic()
    numbered = target.migrations.require_numbered
    report = inspect_project(project, store, spec, require_numbered=numbered, record=True)
    if report.errors:
        log.error(
            "migration refused by the forward-only guard",
            target=target.name,
            errors=[p.code for p in report.errors],
        )
        raise MigrationRefused(report)
    command, env = plan_command(config, target, project, spec)
    before = report.database

    def outcome(status: str, **fields: Any) -> MigrateOutcome:
        defaults: dict[str, Any] = {
            "revision_after": before,
            "applied": (),
            "backup_id": None,
            "backup_path": None,
            "backup_plan": _backup_plan(target, storage, spec),
            "command": command,
            "report": report,
        }
        defaults.update(fields)
        return MigrateOutcome(
            target=target.name,
            status=status,
            revision_before=before,
            duration_s=time.monotonic() - started,
            **defaults,
        )

    if not report.pending:
        log.info("migration: nothing to do", target=target.name, revision=list(before))
        return outcome("up-to-date", backup_plan="none: nothing to migrate")

    backup: BackupOutcome | None = None
    if target.migrations.backup_before:
        log.info("taking the pre-migration backup", target=target.name)
        try:
            backup = take_backup(
                BackupRequest(
                    target, config, catalog, storage, tags=(PRE_MIGRATION_TAG,), cancel=cancel
                )
            )
        except (ConfigError, UsageError):
            raise
        except PgwardenError as exc:
            failed = outcome("failed", error=f"pre-migration backup failed: {scrub(str(exc))}")
            _remember(store, failed, started_at)
            raise MigrationFailed(
                f"{target.name}: the pre-migration backup failed, so nothing "
                f"was migrated: {scrub(str(exc))}",
                failed,
            ) from exc
    backup_fields: dict[str, Any] = {
        "backup_id": backup.backup_id if backup else None,
        "backup_path": str(backup.path) if backup else None,
    }

    scrubber = _Scrubber(spec)
    stdout = _StdoutTail()
    log.info(
        "running alembic upgrade head",
        target=target.name,
        command=command.shell_line(),
        pending=[p.revision for p in report.pending],
    )
    result = process.run_tool(
        command.argv,
        env=env,
        cwd=command.cwd,
        timeout=command.timeout,
        cancel=cancel,
        name="alembic",
        log=_ScrubbingLogger(scrubber, target=target.name),
        stdout=stdout,
    )
    tail = scrubber(result.stderr_tail or stdout.text())
    try:
        after = read_revisions(spec, target.name)
    except DatabaseError as exc:
        if result.ok:
            raise
        after = ()
        tail += f"\n(pgwarden could not read the revision afterwards: {exc})"
    applied = _applied(report, after)
    head = report.heads[0]

    if not result.ok or after != (head,):
        if result.ok:
            where = (
                f"${command.database_url_env}"
                if command.database_url_env
                else "the target's database"
            )
            error = (
                f"alembic exited 0 but the database is at {', '.join(after) or 'no revision'}"
                f", not {head}: does env.py connect to {where}?"
            )
        else:
            error = f"alembic upgrade head {result.describe()}"
            cause = last_error_line(tail)
            if cause:
                error += f": {cause}"
        failed = outcome(
            "failed",
            revision_after=after,
            applied=applied,
            stderr_tail=tail,
            error=error,
            **backup_fields,
        )
        _remember(store, failed, started_at)
        log.error(
            "migration failed",
            target=target.name,
            error=error,
            before=list(before),
            after=list(after),
            backup_id=failed.backup_id,
        )
        raise MigrationFailed(f"{target.name}: {error}", failed)

    post = inspect_project(project, store, spec, require_numbered=numbered, record=True)
    done = outcome("migrated", revision_after=after, applied=applied, report=post, **backup_fields)
    _remember(store, done, started_at)
    log.info(
        "migration finished",
        target=target.name,
        before=list(before),
        after=list(after),
        applied=list(applied),
        backup_id=done.backup_id,
        duration_s=round(done.duration_s, 3),
    )
    return done


def last_error_line(text: str) -> str | None:
    """The last line of a stderr tail that states an error (an exception, alembic's FAILED:)."""
    for line in reversed(text.splitlines()):
        if _ERROR_LINE.match(line):
            return line.strip()[:500]
    return None


def _applied(report: GuardReport, after: tuple[str, ...]) -> tuple[str, ...]:
    """The pending revisions the database got through (all of them, or up to where it stopped)."""
    revisions = [p.revision for p in report.pending]
    if len(after) == 1 and after[0] in revisions:
        return tuple(revisions[: revisions.index(after[0]) + 1])
    return ()


def _remember(store: LedgerStore, outcome: MigrateOutcome, started_at: datetime) -> None:
    record = UpgradeRecord(
        started_at=started_at,
        status=outcome.status,
        before=outcome.revision_before,
        after=outcome.revision_after,
        backup_id=outcome.backup_id,
        duration_s=outcome.duration_s,
        error=outcome.error,
    )
    store.save(store.load().with_upgrade(record))
