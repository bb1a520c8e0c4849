"""Restore drills: prove that a backup restores, and that what comes back is what was dumped.

One drill (:func:`run_verification`), in order; a failing step stops it:

1. ``headroom``: connect to the verification server (``[targets.verify] dsn``, default the
   target's server) and size ``--jobs`` to its free connections (:mod:`.scratch`);
2. ``checksum``: SHA-256 of the artifact against the manifest, in one read that also spools a
   ``.dump.zst`` decompressed for a parallel restore (:mod:`.staging`); nothing is restored
   before it matched -- except when the restore reads the artifact itself (a streamed
   ``.dump.zst``, a ``.dump`` or ``.dir`` in place): then it runs beside steps 3-6 and the
   verdict needs it too (:mod:`.overlap`);
3. ``archive``: ``pg_restore --list`` reads the table of contents (a plain dump was decompressed
   whole and its end-of-dump line found during step 2);
4. ``extensions_available``: every extension of the backup exists on the verification server
   (a missing pgvector is reported as exactly that, before any restore);
5. ``restore`` into the scratch database ``pgwarden_verify_<target>_<stamp>_<rand>``, errors
   captured (:mod:`.pgrestore`); the database itself is created on a thread during step 2
   (an empty copy of ``template0``: nothing is restored before the checksum matched);
6. the checks of :mod:`.checks`: exact row counts, extensions, the operator's SQL checks,
   pgvector probes.  All run even when one fails: the report lists every mismatch.

The scratch database is dropped in every outcome (success, failure, cancellation; after a
crash, by :func:`drop_leftover_scratch_databases` at the next start-up and before the next
drill, which leave alone the databases whose drill still holds its lock: :mod:`.scratchlock`).
A drill holds a run lock while its catalog row is ``running`` (:mod:`.drillreap`), so that
only dead drills' rows are marked interrupted; a restore that stops making progress for
``[targets.verify] stall_timeout`` fails as ``stalled`` (:mod:`.pgrestore`).  The result is
appended to the backup's manifest (rewritten atomically) and recorded in the catalog.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import psycopg

from pgwarden.catalog import BackupStatus, Catalog, DrillStatus
from pgwarden.config import Config, TargetConfig
from pgwarden.errors import BackupError, PgwardenError, UsageError, describe
from pgwarden.logsetup import get_logger
from pgwarden.pg.server import server_major
from pgwarden.redaction import redact
from pgwarden.restore import checks, drillrecord, overlap, pgrestore, scratch, staging
from pgwarden.restore.drillreap import drill_run_lock
from pgwarden.restore.locate import LOCK_TIMEOUT_S, Located, backup_in_use, locate
from pgwarden.restore.outcome import CheckResult, DrillFailed, StepError, VerifyOutcome
from pgwarden.storage import Storage

log = get_logger("pgwarden.verify")

RESTORE_MODES = ("auto", "spool", "stream")
Progress = Callable[..., None]


@dataclass
class VerifyRequest:
    target: TargetConfig
    config: Config
    catalog: Catalog
    storage: Storage
    backup_ref: str | None = None
    cancel: threading.Event | None = None
    progress: Progress | None = None
    #: raise :class:`DrillFailed` when a drill does not pass (a daemon job must fail)
    raise_on_failure: bool = True
    #: also drill one random older backup; ``None``: the target's ``verify.random_older``
    random_older: bool | None = None
    #: how a ``.dump.zst`` reaches pg_restore: spooled for ``--jobs``, or streamed serially
    restore_mode: str = "auto"
    #: the backup, already located (an off-site copy fetched by the caller); None: locate it
    located: Located | None = None

    def report(self, **fields: Any) -> None:
        if self.progress is not None:
            self.progress(**fields)


def drop_leftover_scratch_databases(target: TargetConfig) -> list[str]:
    """Drop the scratch databases that crashed drills left on ``target``'s verification
    server (those whose drill's advisory lock nobody holds); safe while drills run."""
    return scratch.drop_leftovers(target)


def _choose(request: VerifyRequest) -> list[Located]:
    target = request.target.name
    if request.located is not None:
        return [request.located]
    first = locate(request.catalog, request.storage, target, request.backup_ref)
    older = request.random_older
    if older is None:
        older = request.target.verify.random_older and request.backup_ref is None
    if not older:
        return [first]
    candidates = [
        r
        for r in request.catalog.list_backups(target, statuses=(BackupStatus.COMPLETE,))
        if r.id != first.record.id and r.started_at <= first.record.started_at
    ]
    random.SystemRandom().shuffle(candidates)
    for record in candidates:
        try:
            return [first, locate(request.catalog, request.storage, target, record.id)]
        except PgwardenError as exc:
            log.warning(
                "skipping an older backup that cannot be read",
                backup=record.short_id,
                error=redact(str(exc)),
            )
    return [first]


def run_verification(request: VerifyRequest) -> VerifyOutcome:
    """Drill the requested (default: newest) backup, and a random older one when configured."""
    if request.restore_mode not in RESTORE_MODES:
        raise UsageError(f"restore_mode must be one of {RESTORE_MODES}")
    chosen = _choose(request)
    _sweep_dead_drills(request.target)
    outcome = _drill(request, chosen[0])
    older: list[VerifyOutcome] = []
    for located in chosen[1:]:
        if request.cancel is not None and request.cancel.is_set():
            break
        older.append(_drill(request, located))
    if older:
        outcome = replace(outcome, older=tuple(older))
    if request.raise_on_failure and not outcome.passed:
        raise DrillFailed(outcome)
    return outcome


def _sweep_dead_drills(target: TargetConfig) -> None:
    """Drop the scratch databases of dead drills (a killed one-shot ``pgwarden verify``)
    before drilling: this drill connects to that server anyway.  Never fatal."""
    try:
        for name in scratch.drop_leftovers(target):
            log.warning("dropped a scratch database left by a dead drill", database=name)
    except (PgwardenError, psycopg.Error) as exc:
        log.warning("cannot drop the scratch databases of dead drills", error=describe(exc))


@dataclass
class _Draft:
    """What a drill's steps learn while it runs; :func:`_drill` freezes it into its
    :class:`VerifyOutcome` once the drill has ended."""

    status: DrillStatus = DrillStatus.FAILED
    server: str = ""
    jobs: int = 1
    restore_mode: str = ""
    scratch_database: str | None = None
    checks: list[CheckResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _drill(request: VerifyRequest, located: Located) -> VerifyOutcome:
    """One drill, owning its catalog row through its run lock (:mod:`.drillreap`)."""
    with drill_run_lock(request.config) as run_lock:
        return _locked_drill(request, located, run_lock)


def _locked_drill(
    request: VerifyRequest, located: Located, run_lock: dict[str, str]
) -> VerifyOutcome:
    started_at = datetime.now(UTC)
    began = time.monotonic()
    record = located.record
    draft = _Draft()
    drill_id = request.catalog.start_verification(record.id, started_at, run_lock).id
    log.info("restore drill started", backup=record.short_id, artifact=located.artifact.name)
    interrupted: BaseException | None = None
    try:
        with backup_in_use(request.config, request.catalog, located):
            _steps(request, located, draft)
        passed = all(c.passed for c in draft.checks)
        draft.status = DrillStatus.PASSED if passed else DrillStatus.FAILED
    except StepError as exc:
        if exc.step == "cancelled":
            draft.status = DrillStatus.INTERRUPTED
        draft.checks.append(
            CheckResult(exc.step, False, exc.message, expected=exc.expected, actual=exc.actual)
        )
    except PgwardenError as exc:  # a tool, a credential, a lock: the drill could not run
        draft.checks.append(CheckResult("setup", False, redact(str(exc))))
    except psycopg.Error as exc:  # the verification server went away (restart, network)
        draft.checks.append(CheckResult("server", False, describe(exc)))
    except BaseException as exc:  # noqa: BLE001 - KeyboardInterrupt...: recorded, then re-raised
        draft.status = DrillStatus.INTERRUPTED
        draft.checks.append(CheckResult("interrupted", False, type(exc).__name__))
        interrupted = exc
    if _cancelled(request):
        draft.status = DrillStatus.INTERRUPTED
    outcome = VerifyOutcome(
        record.id,
        request.target.name,
        located.artifact.name,
        draft.status,
        started_at,
        datetime.now(UTC),
        time.monotonic() - began,
        tuple(draft.checks),
        server=draft.server,
        scratch_database=draft.scratch_database,
        jobs=draft.jobs,
        restore_mode=draft.restore_mode,
        notes=tuple(draft.notes),
    )
    unrecorded = drillrecord.record(
        request.config,
        request.catalog,
        request.storage,
        located,
        outcome,
        drill_id,
        lock_timeout=LOCK_TIMEOUT_S,
    )
    if unrecorded:
        outcome = replace(outcome, notes=(*outcome.notes, *unrecorded))
    log.info(
        "restore drill finished",
        backup=record.short_id,
        outcome=outcome.status,
        duration_s=round(outcome.duration_s, 3),
        error=outcome.error,
    )
    if interrupted is not None:
        raise interrupted
    return outcome


def _cancelled(request: VerifyRequest) -> bool:
    return request.cancel is not None and request.cancel.is_set()


def _steps(request: VerifyRequest, located: Located, draft: _Draft) -> None:
    target, manifest = request.target, located.manifest
    tool = pgrestore.find_restore_tool(manifest, target.bin_dir)
    spec = scratch.verification_spec(target)
    draft.server = spec.redacted()
    request.report(phase="connecting", backup=located.record.short_id)
    started = time.monotonic()
    with scratch.connect(spec, "the verification server") as conn:
        major = server_major(conn)
        headroom = scratch.connection_headroom(conn)
        plan, note = overlap.plan_drill(
            target, located.artifact, manifest, tool, headroom, request.restore_mode
        )
        draft.jobs = plan.jobs
        draft.checks.append(
            CheckResult(
                "headroom",
                True,
                f"PostgreSQL {major}; {note}",
                duration_s=time.monotonic() - started,
            )
        )
        db = scratch.ScratchDatabase(spec, conn, scratch.scratch_name(target.name), target.name)
        request.report(phase="checksum")
        # the scratch database is created meanwhile (it takes 0.1-0.3 s of fsyncs); it is
        # dropped whatever happens
        with db.creating():
            if overlap.overlaps(manifest, plan.spools):
                _overlapped(request, located, draft, plan, db, major)
            else:
                _checksum_first(request, located, draft, plan, db, major)
        if db.created and not db.dropped:
            draft.notes.append(
                f"the scratch database {db.name} could not be dropped; "
                "it is dropped at the next start-up"
            )


def _checksum_first(
    request: VerifyRequest,
    located: Located,
    draft: _Draft,
    plan: pgrestore.RestorePlan,
    db: scratch.ScratchDatabase,
    major: int,
) -> None:
    """The checksum pass (spooling a ``.dump.zst`` for ``--jobs``), then the restore: nothing
    is restored before the checksum matched."""
    started = time.monotonic()
    spool_dir = request.storage.target_dir(request.target.name) if plan.spools else None
    staged = staging.checksum_and_stage(
        located.manifest, located.artifact, spool_dir=spool_dir, cancel=request.cancel
    )
    try:
        draft.checks.append(
            CheckResult(
                "checksum",
                True,
                f"sha256 {staged.sha256[:16]}... ({staged.size_bytes} bytes)",
                duration_s=time.monotonic() - started,
            )
        )
        _restore_and_check(request, located, draft, plan, staged, db, major)
    finally:
        staged.remove_spool()


def _overlapped(
    request: VerifyRequest,
    located: Located,
    draft: _Draft,
    plan: pgrestore.RestorePlan,
    db: scratch.ScratchDatabase,
    major: int,
) -> None:
    """The checksum on a thread while the archive is restored and checked (:mod:`.overlap`):
    the drill passes only when both do, and a differing checksum is the failure reported."""
    at = len(draft.checks)
    directory = request.storage.target_dir(request.target.name)
    with overlap.PendingChecksum(located.manifest, located.artifact) as pending:
        try:
            with overlap.toc_head(plan, directory) as plan_with_toc:
                _restore_and_check(
                    request, located, draft, plan_with_toc, pending.staged, db, major
                )
        except Exception as exc:
            pending.blame(exc)
            if not (isinstance(exc, StepError) and exc.step == "cancelled"):
                with contextlib.suppress(Exception):  # the step that failed is the one reported
                    draft.checks.insert(at, pending.result())
            raise
        draft.checks.insert(at, pending.result())


def _restore_and_check(
    request: VerifyRequest,
    located: Located,
    draft: _Draft,
    plan: pgrestore.RestorePlan,
    staged: staging.Staged,
    db: scratch.ScratchDatabase,
    major: int,
) -> None:
    """After the checksum: the table of contents, the extensions, the restore into ``db``
    (waited for: it was being created during the checksum) and the checks."""
    target, manifest, cancel = request.target, located.manifest, request.cancel
    draft.restore_mode = overlap.describe_mode(plan, staged)
    draft.notes.extend(staged.notes)
    request.report(phase="reading the archive")
    if manifest.format == "plain":
        draft.checks.append(
            CheckResult("archive", True, "decompressed whole, pg_dump's end-of-dump line present")
        )
    else:
        draft.checks.append(pgrestore.list_archive(plan, staged, cancel))
    db.wait()  # the connection is free again
    where = f"the verification server {db.spec.redacted()}"
    draft.checks.append(checks.check_extensions_available(db.conn, manifest, where, major))
    draft.scratch_database = db.name
    request.report(phase="restoring", database=db.name, jobs=plan.jobs)
    db_spec = db.spec.with_dbname(db.name)
    draft.checks.append(
        pgrestore.run_restore(
            plan,
            staged,
            db_spec,
            server_major=major,
            cancel=cancel,
            stall_timeout=target.verify.stall_timeout,
        )
    )
    staged.remove_spool()  # the disk space is not needed for the checks
    request.report(phase="checking", database=db.name)
    canceller = checks.QueryCanceller(cancel)
    try:
        draft.checks.extend(
            checks.run_checks(
                db_spec, manifest, target.verify.checks, canceller, jobs=plan.connections
            )
        )
    finally:
        canceller.close()
    request.report(phase="dropping the scratch database", database=db.name)


__all__ = [
    "BackupError",
    "DrillFailed",
    "Located",
    "VerifyOutcome",
    "VerifyRequest",
    "drop_leftover_scratch_databases",
    "locate",
    "run_verification",
]
