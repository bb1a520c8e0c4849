"""Taking one backup of one target: connect, check, dump, publish, read back, describe.

One attempt (:func:`_attempt`):

1. connect; find a ``pg_dump`` at least as new as the server (else a clear, non-retried error);
2. check free space against the last backup's size (else the database size) plus a margin;
3. record the run in the catalog, export a snapshot, start ``pg_dump --snapshot`` into
   ``NAME.partial`` and, while it runs, collect the snapshot facts (exact row counts, pgvector
   probes) on the exporting connection;
4. publish atomically (fsync, rename, fsync dir), read the archive back whole (checksum from
   disk, ``pg_restore`` to /dev/null), write the manifest atomically, mark the run complete.

Any failure removes the partial file, records the outcome with a redacted stderr tail, and
never touches existing backups.  :func:`take_backup` retries transient failures with
exponential backoff; missing tools, lack of space and bad credentials are not retried.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from pgwarden.archive import compress
from pgwarden.archive.manifest import Manifest
from pgwarden.backup import pgdump, readback
from pgwarden.backup.facts import Facts, SnapshotSession
from pgwarden.catalog import Catalog
from pgwarden.config import Config, TargetConfig
from pgwarden.errors import (
    BackupError,
    ConfigError,
    CredentialError,
    IncompatibleToolError,
    InsufficientSpaceError,
    PgwardenError,
    UsageError,
)
from pgwarden.logsetup import get_logger, scrub
from pgwarden.pg import process
from pgwarden.pg.binaries import Tool, find_tool
from pgwarden.pg.conninfo import ConnSpec, tool_environment
from pgwarden.pg.server import server_major, server_version
from pgwarden.storage import Storage
from pgwarden.storage.base import backup_name, manifest_name

log = get_logger("pgwarden.backup")

NOT_RETRIED = (
    IncompatibleToolError,
    InsufficientSpaceError,
    CredentialError,
    ConfigError,
    UsageError,
)
Progress = Callable[..., None]


@dataclass(frozen=True)
class BackupOutcome:
    backup_id: str
    target: str
    path: Path
    manifest_path: Path
    size_bytes: int
    sha256: str
    duration_s: float
    format: str
    compression: str
    tables: int
    attempt: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "backup_id": self.backup_id,
            "target": self.target,
            "path": str(self.path),
            "manifest": str(self.manifest_path),
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "duration_s": round(self.duration_s, 3),
            "format": self.format,
            "compression": self.compression,
            "tables": self.tables,
            "attempt": self.attempt,
        }


@dataclass
class BackupRequest:
    target: TargetConfig
    config: Config
    catalog: Catalog
    storage: Storage
    tags: tuple[str, ...] = ("manual",)
    cancel: threading.Event | None = None
    progress: Progress | None = None
    on_tool: Callable[[Tool | None], None] | None = None  # pg_dump found (or not): for metrics
    on_space: Callable[[bool, int], None] | None = None  # space check result, free bytes

    def report(self, **fields: Any) -> None:
        if self.progress is not None:
            self.progress(**fields)

    @property
    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()


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
                error=scrub(str(exc)),
            )
            request.report(phase="waiting to retry", attempt=attempt, error=scrub(str(exc)))
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
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BackupError(
            f"{target}: cannot connect to {spec.redacted()}: {scrub(first)}"
        ) from None


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
        return _dump(request, conn, spec, dump_tool, restore_tool, plan, attempt)
    finally:
        if not conn.closed:
            conn.close()


def _dump(
    request: BackupRequest,
    conn: psycopg.Connection[Any],
    spec: ConnSpec,
    dump_tool: Tool,
    restore_tool: Tool,
    plan: pgdump.DumpPlan,
    attempt: int,
) -> BackupOutcome:
    target = request.target
    settings = target.backup
    catalog, storage = request.catalog, request.storage
    backup_id = uuid.uuid4().hex
    started = datetime.now(UTC)
    started_mono = time.monotonic()
    name = backup_name(started, backup_id[:8], plan.extension)
    database = spec.dbname or "?"
    catalog.record_backup_start(
        backup_id,
        target=target.name,
        database=database,
        started_at=started,
        format=plan.format,
        compression=plan.compression_label,
        tags=request.tags,
        attempt=attempt,
        path=name,
    )
    try:
        with storage.writing(target.name, name, directory=plan.is_directory) as partial:
            session = SnapshotSession(conn)
            request.report(phase="dumping", bytes=0, snapshot=session.snapshot)
            with tool_environment(spec) as env:
                argv = pgdump.dump_argv(
                    dump_tool,
                    plan,
                    conninfo=spec.tool_conninfo(),
                    snapshot=session.snapshot,
                    output=partial.path if plan.stage == "pg_dump" else None,
                    extra_args=settings.extra_args,
                )
                facts, written = _run_dump(request, session, argv, env, plan, partial, restore_tool)
            session.close()
            final = storage.publish(partial)
        request.report(phase="reading back")
        manifest = Manifest(
            id=backup_id,
            target=target.name,
            database=database,
            started_at=started,
            format=plan.format,
            compression=plan.compression_label,
            compression_stage=plan.stage,
            path=name,
            tags=request.tags,
            pg_dump={"version": dump_tool.version, "path": str(dump_tool.path)},
            server={"version": facts.server_version, "version_num": facts.server_version_num},
            snapshot=facts.snapshot,
            row_count_mode=settings.row_counts,
            tables=facts.tables,
            extensions=facts.extensions,
            vector_probes=facts.vector_probes,
            restore_commands=pgdump.restore_hint(plan, name, database),
        )
        if settings.dump_globals:
            request.report(phase="dumping globals")
            manifest.globals_sql = dump_globals(spec, dump_tool, request)
        if written is not None:
            # parsed whole while it was written (readback.StreamCheck): re-hash from disk
            digest = readback.file_digest(final)
            if digest.sha256 != written.sha256:
                raise BackupError(f"{final} changed on disk after writing (checksum differs)")
        else:
            digest = readback.check_artifact(
                manifest, final, restore_tool, cancel=request.cancel, expect_sha256=False
            )
        finished = datetime.now(UTC)
        manifest.finished_at = finished
        manifest.duration_s = round(time.monotonic() - started_mono, 3)
        manifest.size_bytes = digest.size_bytes
        manifest.sha256 = digest.sha256
        manifest.files = digest.files
        manifest_path = storage.write_manifest_atomic(
            target.name, manifest_name(name), manifest.to_json()
        )
    except BaseException as exc:
        _record_failure(request, backup_id, name, exc)
        raise
    catalog.record_backup_finish(
        backup_id,
        status="complete",
        finished_at=finished,
        path=name,
        size_bytes=digest.size_bytes,
        sha256=digest.sha256,
        duration_s=manifest.duration_s,
    )
    request.report(phase="done", bytes=digest.size_bytes)
    return BackupOutcome(
        backup_id,
        target.name,
        final,
        manifest_path,
        digest.size_bytes,
        digest.sha256,
        manifest.duration_s or 0.0,
        plan.format,
        plan.compression_label,
        len(facts.tables),
        attempt,
    )


def _record_failure(request: BackupRequest, backup_id: str, name: str, exc: BaseException) -> None:
    status = "interrupted" if request.cancelled or not isinstance(exc, Exception) else "failed"
    message = scrub(str(exc)) if str(exc) else type(exc).__name__
    try:
        # the artifact may have been published before a later step failed: remove it
        final = request.storage.target_dir(request.target.name) / name
        request.storage.delete(final)
        request.catalog.record_backup_finish(
            backup_id, status=status, finished_at=datetime.now(UTC), error=message
        )
    except PgwardenError as inner:
        log.error("cannot record the failed backup", error=scrub(str(inner)))


def _run_dump(
    request: BackupRequest,
    session: SnapshotSession,
    argv: list[str],
    env: dict[str, str],
    plan: pgdump.DumpPlan,
    partial: Any,
    restore_tool: Tool,
) -> tuple[Facts, Any]:
    """pg_dump and the snapshot facts side by side; the facts come from the exporting
    transaction, which stays open until pg_dump is done."""
    settings = request.target.backup
    timeout = settings.timeout
    with process.start_tool(
        argv,
        env=env,
        name="pg_dump",
        log=log,
        timeout=timeout,
        cancel=request.cancel,
        stdout=process.PIPE if plan.stage == "stream" else process.DEVNULL,
    ) as tool:
        writer: Future[Any] | None = None
        checker: readback.StreamCheck | None = None
        facts_done = threading.Event()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="dump-writer") as pool:
            try:
                if plan.stage == "stream":
                    assert tool.stdout is not None
                    checker = readback.StreamCheck(plan.format, restore_tool, request.cancel)
                    raw = _counting(checker.chunks(tool.stdout), request)
                    chunks = _compressed(raw, plan)
                    writer = pool.submit(request.storage.write_stream, partial, chunks)
                watcher = threading.Thread(
                    target=_cancel_facts_when_needed,
                    args=(request, tool, session, facts_done),
                    name="facts-watch",
                    daemon=True,
                )
                watcher.start()
                try:
                    facts = session.collect(
                        mode=settings.row_counts,
                        exact_max_bytes=settings.exact_count_max_bytes,
                        probes=settings.vector_probes,
                        probe_k=settings.vector_probe_k,
                    )
                except psycopg.Error as exc:
                    tool.terminate_group()
                    if request.cancelled:
                        raise BackupError("backup cancelled") from None
                    message = f"collecting snapshot facts failed: {scrub(str(exc))}"
                    raise BackupError(message) from None
                finally:
                    facts_done.set()
                written = writer.result() if writer is not None else None
                result = tool.wait()
                if checker is not None and result.ok:
                    checker.finish()
            finally:
                if checker is not None:
                    checker.close()
    if result.cancelled:
        raise BackupError("backup cancelled")
    if result.timed_out:
        raise BackupError(f"pg_dump did not finish within {timeout} s")
    process.check(result)
    return facts, written


def _cancel_facts_when_needed(
    request: BackupRequest,
    tool: process.RunningTool,
    session: SnapshotSession,
    done: threading.Event,
) -> None:
    """Interrupt the facts queries when the backup is cancelled or pg_dump has failed, so that
    a query waiting on a lock cannot hold a stopping daemon."""
    while not done.wait(0.1):
        if request.cancelled or tool.returncode not in (None, 0):
            session.conn.cancel_safe()
            return


GLOBALS_LIMIT = 16 << 20


def dump_globals(spec: ConnSpec, dump_tool: Tool, request: BackupRequest) -> str:
    """``pg_dumpall --globals-only --no-role-passwords``: the roles and tablespaces a database
    dump refers to but cannot recreate.  Role passwords are never included."""
    tool = find_tool("pg_dumpall", min_major=dump_tool.major, bin_dir=dump_tool.path.parent)
    out = bytearray()

    def sink(chunk: bytes) -> None:
        out.extend(chunk)
        if len(out) > GLOBALS_LIMIT:
            raise BackupError("pg_dumpall --globals-only printed more than 16 MiB")

    argv = [
        str(tool.path),
        "--globals-only",
        "--no-role-passwords",
        "--no-password",
        f"--dbname={spec.tool_conninfo()}",
    ]
    with tool_environment(spec) as env:
        result = process.run_tool(
            argv, env=env, stdout=sink, name="pg_dumpall", log=log, cancel=request.cancel
        )
    process.check(result)
    return out.decode("utf-8", "replace")


def _compressed(raw: Iterator[memoryview], plan: pgdump.DumpPlan) -> Iterator[compress.Chunk]:
    if plan.codec == "zstd":
        return compress.zstd_compress(raw, plan.level or pgdump.DEFAULT_ZSTD_LEVEL)
    if plan.codec == "gzip":
        return compress.gzip_compress(raw, plan.level or pgdump.DEFAULT_GZIP_LEVEL)
    return compress.passthrough(raw)


def _counting(chunks: Iterator[memoryview], request: BackupRequest) -> Iterator[memoryview]:
    total = 0
    last = 0.0
    for chunk in chunks:
        total += len(chunk)
        now = time.monotonic()
        if now - last >= 0.5:
            request.report(phase="dumping", bytes=total)
            last = now
        yield chunk
    request.report(phase="dumping", bytes=total)
