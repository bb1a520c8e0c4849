"""Safe migrate: the strategy's migration workflow for a target's own Alembic project.

:func:`safe_migrate` does, under the target's migration lock (one upgrade at a time):

1. the forward-only guard (:mod:`~pgwarden.migrate.guard`); any error refuses the upgrade
   (:class:`~pgwarden.migrate.outcome.MigrationRefused`) before anything is touched, and the
   files already applied are recorded in the ledger;
2. nothing pending: done, no backup (there is no schema change to protect);
3. with ``backup_before`` (the default): a ``pg_dump`` backup tagged ``pre-migration``
   through :func:`~pgwarden.backup.take.take_backup` -- verified on read-back, described by a
   manifest, kept by retention at least 7 days.  If it fails, nothing is migrated;
4. the application's own ``alembic -c <ini> upgrade head``, in ``project``
   (:mod:`~pgwarden.migrate.alembic_run`), through
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

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pgwarden.backup.take import BackupOutcome, BackupRequest, take_backup
from pgwarden.catalog import Catalog
from pgwarden.config import Config, TargetConfig
from pgwarden.errors import ConfigError, PgwardenError, UsageError
from pgwarden.logsetup import get_logger
from pgwarden.migrate.alembic_run import (
    child_environment,
    failure_message,
    last_error_line,
    plan_command,
    run_upgrade,
)
from pgwarden.migrate.guard import GuardReport, inspect_project
from pgwarden.migrate.ledger import LedgerStore, UpgradeRecord
from pgwarden.migrate.outcome import (
    AlembicCommand,
    MigrateOutcome,
    MigrateStatus,
    MigrationFailed,
    MigrationRefused,
)
from pgwarden.migrate.project import AlembicProject, locate
from pgwarden.pg.conninfo import ConnSpec
from pgwarden.redaction import redact
from pgwarden.storage import Storage

# child_environment, last_error_line and plan_command live in alembic_run; importable here too
__all__ = [
    "PRE_MIGRATION_TAG",
    "child_environment",
    "last_error_line",
    "plan_command",
    "safe_migrate",
]

log = get_logger("pgwarden.migrate")

PRE_MIGRATION_TAG = "pre-migration"


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
            status=MigrateStatus.PLANNED,
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


@dataclass(frozen=True)
class _Upgrade:
    """What one upgrade fixed before it changed anything; builds and records its outcomes."""

    target: TargetConfig
    store: LedgerStore
    report: GuardReport
    command: AlembicCommand
    backup_plan: str
    started_at: datetime
    started: float  # time.monotonic()

    def outcome(self, status: MigrateStatus, **fields: Any) -> MigrateOutcome:
        defaults: dict[str, Any] = {
            "revision_after": self.report.database,
            "applied": (),
            "backup_id": None,
            "backup_path": None,
            "backup_plan": self.backup_plan,
            "command": self.command,
            "report": self.report,
        }
        defaults.update(fields)
        return MigrateOutcome(
            target=self.target.name,
            status=status,
            revision_before=self.report.database,
            duration_s=time.monotonic() - self.started,
            **defaults,
        )

    def remember(self, outcome: MigrateOutcome) -> None:
        _remember(self.store, outcome, self.started_at)


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
    report = _guard(target, project, store, spec)
    command, env = plan_command(config, target, project, spec)
    plan = _backup_plan(target, storage, spec)
    run = _Upgrade(target, store, report, command, plan, started_at, started)
    before = report.database
    if not report.pending:
        log.info("migration: nothing to do", target=target.name, revision=list(before))
        return run.outcome(MigrateStatus.UP_TO_DATE, backup_plan="none: nothing to migrate")

    backup: BackupOutcome | None = None
    if target.migrations.backup_before:
        backup = _pre_migration_backup(run, config, catalog, storage, cancel)
    backup_fields: dict[str, Any] = {
        "backup_id": backup.backup_id if backup else None,
        "backup_path": str(backup.path) if backup else None,
    }
    pending = [p.revision for p in report.pending]
    result, tail, after = run_upgrade(
        command, env, spec, cancel, target=target.name, pending=pending
    )
    applied = _applied(report, after)
    if not result.ok or after != (report.heads[0],):
        error = failure_message(command, report.heads[0], result, after, tail)
        raise _failed(run, error, after, applied, tail, backup_fields)

    numbered = target.migrations.require_numbered
    post = inspect_project(project, store, spec, require_numbered=numbered, record=True)
    done = run.outcome(
        MigrateStatus.MIGRATED, revision_after=after, applied=applied, report=post, **backup_fields
    )
    run.remember(done)
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


def _guard(
    target: TargetConfig, project: AlembicProject, store: LedgerStore, spec: ConnSpec
) -> GuardReport:
    """The guard, recording newly released files; any error refuses the upgrade."""
    numbered = target.migrations.require_numbered
    report = inspect_project(project, store, spec, require_numbered=numbered, record=True)
    if report.errors:
        log.error(
            "migration refused by the forward-only guard",
            target=target.name,
            errors=[p.code for p in report.errors],
        )
        raise MigrationRefused(report)
    return report


def _pre_migration_backup(
    run: _Upgrade,
    config: Config,
    catalog: Catalog,
    storage: Storage,
    cancel: threading.Event | None,
) -> BackupOutcome:
    """The backup tagged ``pre-migration``; if it fails, the run fails and nothing migrates."""
    target = run.target
    log.info("taking the pre-migration backup", target=target.name)
    try:
        return take_backup(
            BackupRequest(
                target, config, catalog, storage, tags=(PRE_MIGRATION_TAG,), cancel=cancel
            )
        )
    except (ConfigError, UsageError):
        raise
    except PgwardenError as exc:
        failed = run.outcome(
            MigrateStatus.FAILED, error=f"pre-migration backup failed: {redact(str(exc))}"
        )
        run.remember(failed)
        raise MigrationFailed(
            f"{target.name}: the pre-migration backup failed, so nothing "
            f"was migrated: {redact(str(exc))}",
            failed,
        ) from exc


def _failed(
    run: _Upgrade,
    error: str,
    after: tuple[str, ...],
    applied: tuple[str, ...],
    tail: str,
    backup_fields: dict[str, Any],
) -> MigrationFailed:
    """Record and log a failed upgrade; the error to raise, carrying its outcome."""
    failed = run.outcome(
        MigrateStatus.FAILED,
        revision_after=after,
        applied=applied,
        stderr_tail=tail,
        error=error,
        **backup_fields,
    )
    run.remember(failed)
    log.error(
        "migration failed",
        target=run.target.name,
        error=error,
        before=list(run.report.database),
        after=list(after),
        backup_id=failed.backup_id,
    )
    return MigrationFailed(f"{run.target.name}: {error}", failed)


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
