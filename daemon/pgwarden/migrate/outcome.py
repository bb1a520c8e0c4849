"""What a safe migration reports: the command it runs, its outcome, and its two errors.

* :class:`AlembicCommand` -- the exact ``alembic -c <ini> upgrade head`` argv, the directory it
  runs in, the environment variable names it gets and the database URL *with the password
  replaced by* ``***`` (the real one exists only in the child's environment);
* :class:`MigrateOutcome` -- its :class:`MigrateStatus`, revisions before and after, what was
  applied, the pre-migration backup, the duration, the guard report, and on failure alembic's
  (redacted) stderr tail;
* :class:`MigrationRefused` -- the guard found policy errors: nothing was backed up or run;
* :class:`MigrationFailed` -- the backup or alembic failed; ``outcome`` says how far it got.
  The pre-migration backup, if taken, stays in storage (tagged ``pre-migration``, kept at
  least 7 days by retention).
"""

from __future__ import annotations

import enum
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgwarden.errors import PgwardenError
from pgwarden.migrate.guard import GuardReport

__all__ = [
    "AlembicCommand",
    "MigrateOutcome",
    "MigrateStatus",
    "MigrationFailed",
    "MigrationRefused",
]


class MigrateStatus(enum.StrEnum):
    """How a migration ended (``status`` in its JSON and in the ledger's upgrades)."""

    PLANNED = "planned"  # a dry run
    UP_TO_DATE = "up-to-date"
    MIGRATED = "migrated"
    FAILED = "failed"
    #: the guard refused: nothing ran (:class:`MigrationRefused`; only ``migrate --json`` says it)
    REFUSED = "refused"


@dataclass(frozen=True)
class AlembicCommand:
    argv: tuple[str, ...]
    cwd: Path
    env_names: tuple[str, ...]  # every variable the child gets, values not shown
    database_url_env: str | None
    display_url: str | None  # the URL with *** for the password
    timeout: float

    def shell_line(self) -> str:
        """The command as an operator would type it, password redacted."""
        prefix = ""
        if self.database_url_env and self.display_url:
            prefix = f"{self.database_url_env}={shlex.quote(self.display_url)} "
        return f"cd {shlex.quote(str(self.cwd))} && {prefix}{shlex.join(self.argv)}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "argv": list(self.argv),
            "cwd": str(self.cwd),
            "env": list(self.env_names),
            "database_url_env": self.database_url_env,
            "database_url": self.display_url,
            "timeout_s": self.timeout,
            "shell": self.shell_line(),
        }


@dataclass(frozen=True)
class MigrateOutcome:
    """What one migration (or its dry run) found and did."""

    target: str
    status: MigrateStatus
    revision_before: tuple[str, ...]
    revision_after: tuple[str, ...]
    applied: tuple[str, ...]
    backup_id: str | None
    backup_path: str | None
    backup_plan: str | None  # what backup is (or would be) taken, in words
    duration_s: float
    command: AlembicCommand
    report: GuardReport
    stderr_tail: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        """False for a failed run, and for a plan the guard would refuse."""
        return self.status != MigrateStatus.FAILED and self.report.ok

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "status": self.status,
            "ok": self.ok,
            "revision_before": list(self.revision_before),
            "revision_after": list(self.revision_after),
            "applied": list(self.applied),
            "backup_id": self.backup_id,
            "backup_path": self.backup_path,
            "backup_plan": self.backup_plan,
            "duration_s": round(self.duration_s, 3),
            "command": self.command.as_dict(),
            "error": self.error,
            "stderr_tail": self.stderr_tail,
            "guard": self.report.as_dict(),
        }


class MigrationRefused(PgwardenError):
    """The forward-only guard found errors; nothing was backed up or migrated."""

    code = "migration_refused"

    def __init__(self, report: GuardReport) -> None:
        self.report = report
        lines = [
            f"{report.target}: migration refused, the forward-only guard found "
            f"{len(report.errors)} error(s); nothing was backed up or migrated"
        ]
        lines += [f"  {p.code}: {p.message}" for p in report.errors]
        super().__init__("\n".join(lines))


class MigrationFailed(PgwardenError):
    """The pre-migration backup or ``alembic upgrade`` failed (see ``outcome``)."""

    code = "migration_failed"

    def __init__(self, message: str, outcome: MigrateOutcome) -> None:
        self.outcome = outcome
        text = message
        if outcome.backup_id:
            text += (
                f"\nthe pre-migration backup {outcome.backup_id[:8]} ({outcome.backup_path})"
                " is kept (at least 7 days)"
            )
        if outcome.stderr_tail:
            text += "\nalembic stderr (last lines):\n" + outcome.stderr_tail
        super().__init__(text)
