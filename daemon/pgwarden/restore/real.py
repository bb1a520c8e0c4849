"""``pgwarden restore``: restore a backup for real, into a database of the target's server.

Steps: find the backup (newest by default); connect to the target's server and size
``--jobs`` to its free connections; refuse an existing database that holds anything (tables,
views, sequences, extensions...) unless ``force`` -- then the backup's objects replace theirs
(``pg_restore --clean --if-exists``); the checksum (and the ``.dump.zst`` spool) before
anything is written; the archive's table of contents; the backup's extensions available;
``CREATE DATABASE ... TEMPLATE template0`` when it does not exist; the restore, owners and
privileges kept; with ``verify``, the drill's checks on the restored database.

``dry_run`` connects only to learn whether the database exists and what it holds, and returns the
exact commands (:func:`pgwarden.restore.pgrestore.describe`) without running anything.  A
restore that fails leaves the database as it is, saying so: it may hold what could be saved.
"""

from __future__ import annotations

import shlex
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from pgwarden.catalog import Catalog
from pgwarden.config import Config, TargetConfig
from pgwarden.errors import UsageError, describe
from pgwarden.pg.conninfo import ConnSpec
from pgwarden.pg.server import server_major
from pgwarden.restore import checks, pgrestore, scratch, staging
from pgwarden.restore.drill import Progress
from pgwarden.restore.locate import Located, backup_in_use, locate
from pgwarden.restore.outcome import CheckResult, StepError
from pgwarden.storage import Storage

CONTENTS_SQL = """
SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'),
       (SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql'),
       (SELECT count(*) FROM pg_namespace WHERE nspname NOT IN ('public', 'information_schema')
          AND nspname NOT LIKE 'pg\\_%'),
       (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema'))
"""


@dataclass
class RestoreRequest:
    target: TargetConfig
    config: Config
    catalog: Catalog
    storage: Storage
    into: str
    backup_ref: str | None = None
    force: bool = False
    dry_run: bool = False
    verify: bool = False
    cancel: threading.Event | None = None
    progress: Progress | None = None
    #: the backup, already located (an off-site copy fetched by the caller); None: locate it
    located: Located | None = None

    def report(self, **fields: Any) -> None:
        if self.progress is not None:
            self.progress(**fields)


@dataclass
class RestoreOutcome:
    backup_id: str
    target: str
    artifact: str
    database: str
    server: str
    dry_run: bool
    existed: bool
    jobs: int
    contents: str | None = None  # what the existing database held ("3 relations, ..."), if any
    commands: list[str] = field(default_factory=list)
    checks: list[CheckResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def error(self) -> str | None:
        failed = [c for c in self.checks if not c.passed]
        return failed[0].summary() if failed else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "backup_id": self.backup_id,
            "target": self.target,
            "artifact": self.artifact,
            "database": self.database,
            "server": self.server,
            "dry_run": self.dry_run,
            "existed": self.existed,
            "contents": self.contents,
            "jobs": self.jobs,
            "passed": self.passed,
            "error": self.error,
            "duration_s": round(self.duration_s, 3),
            "commands": list(self.commands),
            "notes": list(self.notes),
            "checks": [c.as_dict() for c in self.checks],
        }


def _check_name(name: str) -> None:
    if not name or len(name.encode()) > scratch.MAX_IDENTIFIER or "\0" in name:
        raise UsageError(f"--into: {name!r} is not a valid database name (1-63 bytes)")
    if name.startswith(scratch.SCRATCH_PREFIX):
        raise UsageError(
            f"--into: names starting with {scratch.SCRATCH_PREFIX} are scratch "
            "databases of restore drills, dropped at start-up"
        )
    if name in ("template0", "template1"):
        raise UsageError(f"--into: refusing to restore into {name}")


def _contents(spec: ConnSpec) -> str | None:
    """What an existing database holds, in words; ``None`` when it is empty."""
    with scratch.connect(spec, "the database") as conn:
        row = conn.execute(CONTENTS_SQL).fetchone()
    assert row is not None
    parts = [
        f"{n} {what}"
        for n, what in zip(row, ("relations", "extensions", "schemas", "functions"), strict=True)
        if n
    ]
    return ", ".join(parts) or None


def _exists(conn: psycopg.Connection[Any], name: str) -> bool:
    return (
        conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None
    )


def restore_backup(request: RestoreRequest) -> RestoreOutcome:
    """Restore (or, with ``dry_run``, describe restoring) a backup into ``request.into``."""
    _check_name(request.into)
    began = time.monotonic()
    target = request.target
    located = request.located or locate(
        request.catalog, request.storage, target.name, request.backup_ref
    )
    manifest = located.manifest
    tool = pgrestore.find_restore_tool(manifest, target.bin_dir)
    spec = ConnSpec.from_target(target)
    into = spec.with_dbname(request.into)
    with scratch.connect(spec, f"target {target.name}") as conn:
        major = server_major(conn)
        existed = _exists(conn, request.into)
        held = _contents(into) if existed else None
        if held and not request.force:
            raise UsageError(
                f"database {request.into} exists and is not empty ({held}); pass --force to "
                "restore into it anyway (the backup's objects then replace existing ones of "
                "the same name: pg_restore --clean --if-exists)"
            )
        jobs, note = scratch.plan_jobs(target.verify.jobs, scratch.connection_headroom(conn))
        plan = pgrestore.RestorePlan(
            manifest, located.artifact, tool, jobs=jobs, drill=False, clean=bool(held)
        )
        spool_dir = request.storage.target_dir(target.name) if plan.spools else None
        outcome = RestoreOutcome(
            located.record.id,
            target.name,
            located.artifact.name,
            request.into,
            spec.redacted(),
            request.dry_run,
            existed,
            jobs,
            contents=held,
            notes=[note],
        )
        create: tuple[str, ...] = ()
        if not existed:
            statement = (
                sql.SQL("CREATE DATABASE {} TEMPLATE template0")
                .format(sql.Identifier(request.into))
                .as_string(conn)
            )
            create = (f"psql {shlex.quote(spec.tool_conninfo())} -c {shlex.quote(statement)}",)
        outcome.commands.extend(pgrestore.describe(plan, into, spool_dir, create))
        if request.dry_run:
            outcome.duration_s = time.monotonic() - began
            return outcome
        with backup_in_use(request.config, request.catalog, located):
            _run(request, located, plan, conn, major, outcome, spool_dir, existed)
    outcome.duration_s = time.monotonic() - began
    return outcome


def _run(
    request: RestoreRequest,
    located: Located,
    plan: pgrestore.RestorePlan,
    conn: psycopg.Connection[Any],
    major: int,
    outcome: RestoreOutcome,
    spool_dir: Path | None,
    existed: bool,
) -> None:
    manifest, cancel = located.manifest, request.cancel
    into = ConnSpec.from_target(request.target).with_dbname(request.into)
    try:
        request.report(phase="checksum")
        staged = staging.checksum_and_stage(
            manifest, located.artifact, spool_dir=spool_dir, cancel=cancel
        )
    except StepError as exc:
        outcome.checks.append(
            CheckResult(exc.step, False, exc.message, expected=exc.expected, actual=exc.actual)
        )
        return
    try:
        outcome.checks.append(CheckResult("checksum", True, f"sha256 {staged.sha256[:16]}..."))
        outcome.notes.extend(staged.notes)
        if manifest.format != "plain":
            outcome.checks.append(pgrestore.list_archive(plan, staged, cancel))
        outcome.checks.append(
            checks.check_extensions_available(conn, manifest, outcome.server, major)
        )
        if not existed:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(
                    sql.Identifier(request.into)
                )
            )
        request.report(phase="restoring", database=request.into, jobs=plan.jobs)
        result = pgrestore.run_restore(
            plan,
            staged,
            into,
            server_major=major,
            cancel=cancel,
            stall_timeout=request.target.verify.stall_timeout,
        )
        outcome.checks.append(result)
        staged.remove_spool()
        if not result.passed:
            outcome.notes.append(
                f"database {request.into} was left as the restore left it; "
                "drop it or restore again with --force"
            )
        if request.verify:
            request.report(phase="checking", database=request.into)
            canceller = checks.QueryCanceller(cancel)
            try:
                outcome.checks.extend(
                    checks.run_checks(
                        into, manifest, request.target.verify.checks, canceller, jobs=plan.jobs
                    )
                )
            finally:
                canceller.close()
    except StepError as exc:
        outcome.checks.append(
            CheckResult(exc.step, False, exc.message, expected=exc.expected, actual=exc.actual)
        )
    except psycopg.Error as exc:
        outcome.checks.append(CheckResult("database", False, describe(exc)))
    finally:
        staged.remove_spool()
