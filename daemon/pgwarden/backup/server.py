"""One run of a whole-server target: discover its databases, dump the globals once, then back
up each database as the sub-target ``<target>/<database>``.

Each database's backup is an ordinary one (:func:`pgwarden.backup.take.take_backup` on
:meth:`TargetConfig.for_database <pgwarden.config.TargetConfig.for_database>`): its own
directory ``<storage>/<target>/<database>/``, manifest, catalog rows, retention and drills.  The
globals (``pg_dumpall --globals-only --no-role-passwords``: roles without passwords,
tablespaces) go to ``<storage>/<target>/globals-<UTC stamp>-<short id>.sql``, mode 0600, written
atomically, and are pruned when no kept backup needs them
(:func:`pgwarden.retention.subtargets.stale_globals`).  One
database failing does not stop the others; the run then raises :class:`ServerBackupFailed`
naming each failure (already redacted), with the outcome attached.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from pgwarden.backup.dumpall import dump_globals
from pgwarden.backup.request import BackupOutcome, BackupRequest
from pgwarden.backup.take import take_backup
from pgwarden.errors import BackupError, PgwardenError, describe
from pgwarden.logsetup import get_logger
from pgwarden.pg.binaries import find_tool
from pgwarden.pg.conninfo import ConnSpec
from pgwarden.pg.server import server_major, server_version
from pgwarden.pg.serverdbs import Discovery, discover
from pgwarden.redaction import redact
from pgwarden.storage.base import globals_name

log = get_logger("pgwarden.backup")


@dataclass(frozen=True)
class DatabaseFailure:
    database: str
    error: str  # redacted


@dataclass(frozen=True)
class ServerBackupOutcome:
    """What one whole-server run did: the globals file, each database's backup or failure."""

    target: str
    globals_path: Path
    discovery: Discovery
    backups: tuple[BackupOutcome, ...]
    failures: tuple[DatabaseFailure, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "globals": str(self.globals_path),
            "databases": list(self.discovery.databases),
            "excluded": list(self.discovery.excluded),
            "unnamable": list(self.discovery.unnamable),
            "backups": [b.as_dict() for b in self.backups],
            "failures": [dataclasses.asdict(f) for f in self.failures],
        }


class ServerBackupFailed(BackupError):
    """At least one database of a whole-server target could not be backed up."""

    def __init__(self, outcome: ServerBackupOutcome) -> None:
        self.outcome = outcome
        named = "; ".join(f"{f.database}: {f.error}" for f in outcome.failures)
        super().__init__(f"{outcome.target}: {len(outcome.failures)} database(s) failed: {named}")


def take_server_backup(request: BackupRequest) -> ServerBackupOutcome:
    """Back up every selected database of ``request.target`` (a whole-server target)."""
    target = request.target
    if not target.whole_server:
        raise BackupError(f"{target.name}: not a whole-server target (no databases = ...)")
    spec = ConnSpec.from_target(target)
    globals_path, found = prepare_server_run(request, spec)
    backups: list[BackupOutcome] = []
    failures: list[DatabaseFailure] = []
    for database in found.databases:
        if request.cancelled:
            failures.append(DatabaseFailure(database, "cancelled"))
            continue
        sub = dataclasses.replace(request, target=target.for_database(database))
        try:
            backups.append(take_backup(sub))
        except PgwardenError as exc:
            error = redact(str(exc))
            log.error("database backup failed", target=target.name, database=database, error=error)
            failures.append(DatabaseFailure(database, error))
    for name in found.unnamable:
        failures.append(DatabaseFailure(name, "name cannot be a storage directory; not backed up"))
    outcome = ServerBackupOutcome(target.name, globals_path, found, tuple(backups), tuple(failures))
    if failures:
        raise ServerBackupFailed(outcome)
    return outcome


def prepare_server_run(request: BackupRequest, spec: ConnSpec) -> tuple[Path, Discovery]:
    """A run's first step: the databases selected now, and the globals written (0600)."""
    target = request.target
    request.report(phase="discovering databases")
    try:
        conn = spec.connect(application_name="pgwarden-backup", autocommit=True)
    except psycopg.Error as exc:  # libpq's messages never echo the password
        raise BackupError(
            f"{target.name}: cannot connect to {spec.redacted()}: {describe(exc)}"
        ) from exc
    try:
        found = discover(conn, target)
        major, version = server_major(conn), server_version(conn)
    finally:
        conn.close()
    dump_tool = find_tool(
        "pg_dump", min_major=major, bin_dir=target.bin_dir, server_version=version
    )
    request.report(phase="dumping globals")
    sql = dump_globals(spec, dump_tool, request.cancel)
    path = request.storage.write_manifest_atomic(
        target.name, globals_name(datetime.now(UTC), uuid.uuid4().hex[:8]), sql.encode("utf-8")
    )
    log.info("globals dumped", target=target.name, path=str(path), databases=len(found.databases))
    return path, found
