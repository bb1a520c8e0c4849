"""Taking one backup of one target: connect, check, dump, publish, read back, describe.

One attempt (:func:`_attempt`):

1. connect; find a ``pg_dump`` at least as new as the server (else a clear, non-retried error);
2. check free space against the last backup's size (else the database size) plus a margin;
3. record the run in the catalog, export a snapshot, start ``pg_dump --snapshot`` into
   ``NAME.partial`` and, while it runs, collect the snapshot facts (exact row counts, pgvector
   probes) on the exporting connection (:mod:`~pgwarden.backup.dumprun`);
4. publish atomically (fsync, rename, fsync dir), read the archive back whole (checksum from
   disk, ``pg_restore`` to /dev/null), write the manifest atomically, mark the run complete.

Any failure removes the partial file, records the outcome with a redacted stderr tail, and
never touches existing backups.  :func:`take_backup` retries transient failures with
exponential backoff; missing tools, lack of space, bad credentials and a stalled dump (no
progress for ``stall_timeout``: :mod:`pgwarden.pg.stallwatch`) are not retried.
The request and outcome types live in :mod:`~pgwarden.backup.request` (importable from here).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import psycopg

from pgwarden.archive.codecs import Stage
from pgwarden.archive.digest import Digest
from pgwarden.archive.manifest import Manifest
from pgwarden.backup import pgdump, readback
from pgwarden.backup.dumpall import dump_globals
from pgwarden.backup.dumprun import dump_watch, run_dump
from pgwarden.backup.facts import Facts, SnapshotSession
from pgwarden.backup.request import BackupOutcome, BackupRequest, Progress
from pgwarden.catalog import BackupStatus
from pgwarden.errors import (
    BackupError,
    ConfigError,
    CredentialError,
    IncompatibleToolError,
    InsufficientSpaceError,
    PgwardenError,
    StallError,
    UsageError,
    describe,
)
from pgwarden.logsetup import get_logger
from pgwarden.pg.binaries import Tool, find_tool
from pgwarden.pg.conninfo import ConnSpec, tool_environment
from pgwarden.pg.server import server_major, server_version
from pgwarden.pg.stallwatch import session_tag
from pgwarden.redaction import redact
from pgwarden.storage.base import WriteResult, backup_name, manifest_name
from pgwarden.storage.locks import BackupLocks

__all__ = ["NOT_RETRIED", "BackupOutcome", "BackupRequest", "Progress", "take_backup"]

log = get_logger("pgwarden.backup")

NOT_RETRIED = (
    IncompatibleToolError,
    InsufficientSpaceError,
    CredentialError,
    ConfigError,
    UsageError,
    StallError,  # a dump that stalled once stalls again: the alert, not a retry, is the answer
)


def take_backup(request: BackupRequest) -> BackupOutcome:
    """Back up ``request.target``, retrying transient failures; raise the last error."""
    settings = request.target.backup
    attempts = 1 + settings.retries
    for attempt in range(1, attempts + 1):
        try:
            return _attempt(request, attempt)
        except NOT_RETRIED:
            raise
        except PgwardenError as exc:
            if request.cancelled or attempt == attempts:
                raise
            delay = settings.retry_backoff * (2 ** (attempt - 1))
            log.warning(
                "backup attempt failed; retrying",
                attempt=attempt,
                retry_in_s=delay,
                error=redact(str(exc)),
            )
            request.report(phase="waiting to retry", attempt=attempt, error=redact(str(exc)))
            if request.cancel is not None:
                if request.cancel.wait(delay):
                    raise
            else:
                time.sleep(delay)
    raise AssertionError("unreachable")


def _connect(spec: ConnSpec, target: str) -> psycopg.Connection[Any]:
    try:
        return spec.connect(application_name="pgwarden-backup", autocommit=True)
    except psycopg.Error as exc:
        # libpq's messages never echo the password: the cause may be chained
        raise BackupError(
            f"{target}: cannot connect to {spec.redacted()}: {describe(exc)}"
        ) from exc


def _space_check(request: BackupRequest, conn: psycopg.Connection[Any]) -> int:
    target = request.target.name
    last = request.catalog.last_success(target)
    if last is not None and last.size_bytes:
        estimate = int(last.size_bytes)
    else:
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        estimate = int(row[0]) if row else 0
    needed = int(estimate * (1 + request.config.storage.min_free_margin))
    free = request.storage.free_bytes(target)
    ok = free >= needed
    if request.on_space is not None:
        request.on_space(ok, free)
    if not ok:
        raise InsufficientSpaceError(request.storage.target_dir(target), needed, free)
    return estimate


def restore_tool_for(dump_tool: Tool, bin_dir: Path | None) -> Tool:
    """``pg_restore`` from the same installation as ``dump_tool`` (it reads what that wrote)."""
    return find_tool(
        "pg_restore", min_major=dump_tool.major, bin_dir=bin_dir or dump_tool.path.parent
    )


def _attempt(request: BackupRequest, attempt: int) -> BackupOutcome:
    target = request.target
    settings = target.backup
    spec = ConnSpec.from_target(target)
    request.report(phase="connecting", attempt=attempt)
    conn = _connect(spec, target.name)
    try:
        major = server_major(conn)
        version = server_version(conn)
        try:
            dump_tool = find_tool(
                "pg_dump", min_major=major, bin_dir=target.bin_dir, server_version=version
            )
        except IncompatibleToolError:
            if request.on_tool is not None:
                request.on_tool(None)
            raise
        if request.on_tool is not None:
            request.on_tool(dump_tool)
        restore_tool = restore_tool_for(dump_tool, target.bin_dir)
        _space_check(request, conn)
        plan = pgdump.plan_dump(settings, dump_tool)
        return _dump(_Backup.new(request, spec, dump_tool, restore_tool, plan, attempt), conn)
    finally:
        if not conn.closed:
            conn.close()


@dataclass(frozen=True)
class _Backup:
    """One attempt's fixed facts, decided before pg_dump starts."""

    request: BackupRequest
    spec: ConnSpec
    dump_tool: Tool
    restore_tool: Tool
    plan: pgdump.DumpPlan
    attempt: int
    backup_id: str
    name: str  # the artifact's name in storage
    database: str
    started: datetime
    started_mono: float

    @classmethod
    def new(
        cls,
        request: BackupRequest,
        spec: ConnSpec,
        dump_tool: Tool,
        restore_tool: Tool,
        plan: pgdump.DumpPlan,
        attempt: int,
    ) -> _Backup:
        """A new backup id, its start time and the artifact's name."""
        backup_id = uuid.uuid4().hex
        started = datetime.now(UTC)
        name = backup_name(started, backup_id[:8], plan.extension)
        database = spec.dbname or "?"
        return cls(
            request,
            spec,
            dump_tool,
            restore_tool,
            plan,
            attempt,
            backup_id,
            name,
            database,
            started,
            time.monotonic(),
        )


class _Written(NamedTuple):
    """A published, read-back, described artifact."""

    final: Path
    manifest: Manifest
    manifest_path: Path
    digest: Digest
    finished: datetime


def _dump(b: _Backup, conn: psycopg.Connection[Any]) -> BackupOutcome:
    """Hold the run's lock while it owns a catalog row ``running`` and a ``NAME.partial``:
    a later run reaps them only once this one is dead (:mod:`pgwarden.backup.reap`)."""
    with BackupLocks(b.request.config.daemon.state_dir).run(b.name):
        return _locked_dump(b, conn)


def _locked_dump(b: _Backup, conn: psycopg.Connection[Any]) -> BackupOutcome:
    """Record the attempt, produce the artifact and its manifest, record how it ended."""
    request, plan = b.request, b.plan
    request.catalog.record_backup_start(
        b.backup_id,
        target=request.target.name,
        database=b.database,
        started_at=b.started,
        format=plan.format,
        compression=plan.compression_label,
        tags=request.tags,
        attempt=b.attempt,
        path=b.name,
    )
    try:
        done = _produce(b, conn)
    except BaseException as exc:
        _record_failure(request, b.backup_id, b.name, exc)
        raise
    request.catalog.record_backup_finish(
        b.backup_id,
        status=BackupStatus.COMPLETE,
        finished_at=done.finished,
        path=b.name,
        size_bytes=done.digest.size_bytes,
        sha256=done.digest.sha256,
        duration_s=done.manifest.duration_s,
    )
    request.report(phase="done", bytes=done.digest.size_bytes)
    return BackupOutcome(
        b.backup_id,
        request.target.name,
        done.final,
        done.manifest_path,
        done.digest.size_bytes,
        done.digest.sha256,
        done.manifest.duration_s or 0.0,
        plan.format,
        plan.compression_label,
        len(done.manifest.tables),
        b.attempt,
    )


def _produce(b: _Backup, conn: psycopg.Connection[Any]) -> _Written:
    """Dump, publish, describe, read back, write the manifest."""
    request = b.request
    final, facts, written = _dump_and_publish(b, conn)
    request.report(phase="reading back")
    manifest = _manifest(b, facts)
    if request.target.backup.dump_globals:
        request.report(phase="dumping globals")
        manifest.globals_sql = dump_globals(b.spec, b.dump_tool, request.cancel)
    digest = _read_back(b, manifest, final, written)
    finished = datetime.now(UTC)
    manifest.finished_at = finished
    manifest.duration_s = round(time.monotonic() - b.started_mono, 3)
    manifest.size_bytes = digest.size_bytes
    manifest.sha256 = digest.sha256
    manifest.files = digest.files
    manifest_path = request.storage.write_manifest_atomic(
        request.target.name, manifest_name(b.name), manifest.to_json()
    )
    return _Written(final, manifest, manifest_path, digest, finished)


def _dump_and_publish(
    b: _Backup, conn: psycopg.Connection[Any]
) -> tuple[Path, Facts, WriteResult | None]:
    """pg_dump into ``NAME.partial`` with the snapshot exported on ``conn``, then publish."""
    request, plan = b.request, b.plan
    storage = request.storage
    with storage.writing(request.target.name, b.name, directory=plan.is_directory) as partial:
        session = SnapshotSession(conn)
        request.report(phase="dumping", bytes=0, snapshot=session.snapshot)
        # pg_dump's sessions carry a tag of their own: the stall watch sees them work
        tag = session_tag("dump")
        with tool_environment(b.spec) as env, dump_watch(request, session, partial, tag) as watch:
            argv = pgdump.dump_argv(
                b.dump_tool,
                plan,
                conninfo=b.spec.with_params(application_name=tag).tool_conninfo(),
                snapshot=session.snapshot,
                output=partial.path if plan.stage == Stage.PG_DUMP else None,
                extra_args=request.target.backup.extra_args,
            )
            facts, written = run_dump(
                request, session, argv, env, plan, partial, b.restore_tool, watch
            )
        session.close()
        final = storage.publish(partial)
    return final, facts, written


def _manifest(b: _Backup, facts: Facts) -> Manifest:
    """The manifest as far as it is known before reading back (no size, checksum, end)."""
    return Manifest(
        id=b.backup_id,
        target=b.request.target.name,
        database=b.database,
        started_at=b.started,
        format=b.plan.format,
        compression=b.plan.compression_label,
        compression_stage=b.plan.stage,
        path=b.name,
        tags=b.request.tags,
        pg_dump={"version": b.dump_tool.version, "path": str(b.dump_tool.path)},
        server={"version": facts.server_version, "version_num": facts.server_version_num},
        snapshot=facts.snapshot,
        row_count_mode=b.request.target.backup.row_counts,
        tables=facts.tables,
        extensions=facts.extensions,
        vector_probes=facts.vector_probes,
        restore_commands=pgdump.restore_hint(b.plan, b.name, b.database),
    )


def _read_back(b: _Backup, manifest: Manifest, final: Path, written: WriteResult | None) -> Digest:
    """The published artifact's digest, read from disk and checked whole."""
    if written is not None:
        # parsed whole while it was written (readback.StreamCheck): re-hash from disk
        digest = readback.file_digest(final)
        if digest.sha256 != written.sha256:
            raise BackupError(f"{final} changed on disk after writing (checksum differs)")
        return digest
    return readback.check_artifact(
        manifest, final, b.restore_tool, cancel=b.request.cancel, expect_sha256=False
    )


def _record_failure(request: BackupRequest, backup_id: str, name: str, exc: BaseException) -> None:
    status = (
        BackupStatus.INTERRUPTED
        if request.cancelled or not isinstance(exc, Exception)
        else BackupStatus.FAILED
    )
    # the whole message, not describe()'s first line: a tool's stderr tail goes to the catalog
    message = redact(str(exc)) if str(exc) else type(exc).__name__
    try:
        # the artifact may have been published before a later step failed: remove it
        final = request.storage.target_dir(request.target.name) / name
        request.storage.delete(final)
        request.catalog.record_backup_finish(
            backup_id, status=status, finished_at=datetime.now(UTC), error=message
        )
    except PgwardenError as inner:
        log.error("cannot record the failed backup", error=describe(inner))
