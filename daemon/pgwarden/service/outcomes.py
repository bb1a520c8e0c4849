"""Metrics from job outcomes and from the catalog: what ``/metrics`` says about history.

:func:`record_job` is called by :meth:`.core.Service.after_job` for every finished job and
reads the job's typed outcome (``BackupOutcome``, ``VerifyOutcome``, ``PruneOutcome``): it
counts the run by result (a stalled backup or drill also in ``pgwarden_jobs_stalled_total``),
updates the "last run" gauges of its kind, then refreshes the target's storage gauges
(backups by state, oldest kept backup, bytes stored, free space).
:func:`restore_gauges` runs once at start-up and sets the history gauges from the catalog, so
that a restart looks like nothing happened and fires no alert (DESIGN.md, "Metrics").
The off-site job's metrics and their restoration are :mod:`.offsite_metrics`.

Neither ever queries PostgreSQL (only the catalog and the storage), and neither raises: a
catalog or storage error is logged and leaves the gauges as they were, because a metrics
update must never cost a job its follow-ups (prune, verify after backup).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from prometheus_client import Gauge

from pgwarden import logsetup
from pgwarden.backup.take import BackupOutcome
from pgwarden.catalog import (
    FINISH_STATUSES,
    VERIFY_STATUSES,
    BackupStatus,
    DrillStatus,
    TargetSummary,
)
from pgwarden.config.kinds import JobKind
from pgwarden.config.names import SUB_TARGET_SEP
from pgwarden.errors import PgwardenError, StallError, describe
from pgwarden.metrics import BACKUP_STATES, Metrics
from pgwarden.restore.outcome import VerifyOutcome
from pgwarden.retention.prune import PruneOutcome
from pgwarden.retention.subtargets import prune_units
from pgwarden.service import notifications
from pgwarden.service.fanout import FanOutOutcome
from pgwarden.service.jobs import Job, JobState
from pgwarden.service.offsite_metrics import record_offsite, restore_offsite
from pgwarden.service.state import ServiceState

log = logsetup.get_logger("pgwarden.outcomes")

#: Job.state -> the ``result`` label of the run counters
RESULTS = {
    JobState.SUCCEEDED: "success",
    JobState.FAILED: "failure",
    JobState.CANCELLED: "cancelled",
}
#: how many recent drills restore_gauges looks through for the newest passed one
DRILL_LOOKBACK = 100


def record_job(state: ServiceState, job: Job) -> None:
    """Update the metrics from one finished job, then the target's storage gauges."""
    result = RESULTS.get(job.state)
    if result is None:  # not finished: nothing to record
        return
    m = state.metrics
    finished = (job.finished_at or datetime.now(UTC)).timestamp()
    outcome = job.result
    if isinstance(outcome, FanOutOutcome):  # the jobs per database record their outcomes
        if outcome.kind == JobKind.BACKUP:
            _record_databases(state, outcome)
    elif job.kind == JobKind.BACKUP:
        backup = outcome if isinstance(outcome, BackupOutcome) else None
        if result == "success" and backup is not None:
            # the catalog's time, which a restart restores exactly (the outcome has none)
            finished = _catalog_finish(state, job.target, backup) or finished
        _record_backup(m, job, backup, result, finished)
    elif job.kind == JobKind.VERIFY:
        drill = outcome if isinstance(outcome, VerifyOutcome) else None
        _record_verify(m, job, drill, result, finished)
    elif job.kind == JobKind.PRUNE:
        _record_prune(m, job, outcome if isinstance(outcome, PruneOutcome) else None, result)
    elif job.kind == JobKind.OFFSITE:
        record_offsite(state, job, result)
    if job.error_code == StallError.code or (
        isinstance(outcome, VerifyOutcome) and outcome.stalled
    ):
        m.jobs_stalled.labels(job.target, job.kind.value).inc()
    notifications.job_finished(state, job)
    refresh_target(state, job.target)


def _record_databases(state: ServiceState, fanned: FanOutOutcome) -> None:
    """``pgwarden_server_database_present``: 1 for each database this run selected, 0 for one
    the catalog has backups of that is gone (or no longer selected)."""
    prefix = f"{fanned.target}{SUB_TARGET_SEP}"
    try:
        known = {t for t in state.catalog.targets() if t.startswith(prefix)}
    except PgwardenError as exc:
        log.warning("cannot list the databases' history", target=fanned.target, error=str(exc))
        known = set()
    for sub in sorted(known | set(fanned.sub_targets)):
        present = 1 if sub in fanned.sub_targets else 0
        state.metrics.server_database.labels(fanned.target, sub.removeprefix(prefix)).set(present)


def _record_prune(m: Metrics, job: Job, prune: PruneOutcome | None, result: str) -> None:
    """A prune that could not delete what its plan named failed (the job raised
    :class:`~pgwarden.retention.prune.PruneFailed`, its outcome attached); a dry run changes
    nothing and counts nothing."""
    if prune.dry_run if prune is not None else bool(job.args.get("dry_run")):
        return
    target = job.target
    if prune is not None and prune.deleted > 0:
        m.retention_deleted.labels(target).inc(prune.deleted)
    m.prune_runs.labels(target, result).inc()
    if result != "cancelled":
        m.prune_last_ok.labels(target).set(1 if result == "success" else 0)


def _catalog_finish(state: ServiceState, target: str, backup: BackupOutcome) -> float | None:
    try:
        record = state.catalog.get_backup(backup.backup_id, target=target)
    except PgwardenError:
        return None
    return None if record.finished_at is None else record.finished_at.timestamp()


def _duration(job: Job, outcome: BackupOutcome | VerifyOutcome | None) -> float:
    """The outcome's own duration (rounded like its ``as_dict``), else the job's."""
    if outcome is not None:
        return round(outcome.duration_s, 3)
    if job.started_at is not None and job.finished_at is not None:
        return max((job.finished_at - job.started_at).total_seconds(), 0.0)
    return 0.0


def _record_backup(
    m: Metrics, job: Job, backup: BackupOutcome | None, result: str, finished: float
) -> None:
    target = job.target
    m.backup_runs.labels(target, result).inc()
    m.backup_last_attempt.labels(target).set(finished)
    if result == "cancelled":  # stopped by an operator or a shutdown: not a failure
        return
    m.backup_last_ok.labels(target).set(1 if result == "success" else 0)
    if result == "success":
        m.backup_last_success.labels(target).set(finished)
        m.backup_last_duration.labels(target).set(_duration(job, backup))
        if backup is not None:
            m.backup_last_size.labels(target).set(backup.size_bytes)


def drill_passed(job: Job, drill: VerifyOutcome | None) -> bool:
    """A verify job passed if it succeeded and its drill (and every older one run with it)
    passed."""
    return job.state == JobState.SUCCEEDED and drill is not None and drill.passed


def _record_verify(
    m: Metrics, job: Job, drill: VerifyOutcome | None, result: str, finished: float
) -> None:
    target = job.target
    if result == "success" and not drill_passed(job, drill):
        result = "failure"  # the job ran to its end, the drill found a problem
    m.verify_runs.labels(target, result).inc()
    if result == "cancelled":
        return
    m.verify_last_ok.labels(target).set(1 if result == "success" else 0)
    m.verify_last_duration.labels(target).set(_duration(job, drill))
    if result == "success":
        m.verify_last_success.labels(target).set(finished)


def refresh_target(
    state: ServiceState, target: str, summaries: Mapping[str, TargetSummary] | None = None
) -> None:
    """Backups by state, oldest kept backup, bytes stored and free space of one target
    (its summary taken from ``summaries`` when given: start-up reads them all at once)."""
    m = state.metrics
    try:
        kept = state.catalog.list_backups(target, statuses=(BackupStatus.COMPLETE,))
        summary = state.catalog.summary(target) if summaries is None else summaries.get(target)
        stored = state.storage.stored_bytes(target)
        free = state.storage.free_bytes(target)
    except (PgwardenError, OSError) as exc:
        log.warning("cannot refresh storage metrics", target=target, error=describe(exc))
        return
    counts: dict[str, int] = {
        BackupStatus.COMPLETE: len(kept),
        BackupStatus.FAILED: summary.failed_count if summary else 0,
    }
    for backup_state in BACKUP_STATES:
        m.backups.labels(target, backup_state).set(counts.get(backup_state, 0))
    if kept:
        m.backup_oldest.labels(target).set(min(b.started_at for b in kept).timestamp())
    else:
        _drop(m.backup_oldest, target)
    m.stored_bytes.labels(target).set(stored)
    m.storage_free.set(free)


def restore_gauges(state: ServiceState) -> None:
    """At start-up: every configured target's history gauges from the catalog."""
    try:
        summaries = state.catalog.summaries()
    except PgwardenError as exc:
        log.warning("cannot restore metrics from the catalog", error=describe(exc))
        summaries = {}
    for name in _metric_targets(state):
        state.metrics.init_target(name)
        try:
            _restore_target(state, name, summaries.get(name))
        except PgwardenError as exc:
            log.warning(
                "cannot restore metrics from the catalog",
                target=name,
                error=describe(exc),
            )
        refresh_target(state, name, summaries)
        restore_offsite(state, name)


def _metric_targets(state: ServiceState) -> list[str]:
    """The configured targets, each whole-server one followed by its databases'
    (``<target>/<database>``, those the catalog has backups of: their series, restored)."""
    names: list[str] = []
    for target in state.config.targets:
        names.append(target.name)
        if target.whole_server:
            try:
                names += [u.name for u in prune_units(target, state.catalog)]
            except PgwardenError as exc:
                log.warning(
                    "cannot list the databases' history", target=target.name, error=str(exc)
                )
    return names


def _restore_target(state: ServiceState, target: str, summary: TargetSummary | None) -> None:
    m, catalog = state.metrics, state.catalog
    # every attempt that ended, deleted backups included (they succeeded)
    ended = (*FINISH_STATUSES, BackupStatus.DELETED)
    finished = catalog.list_backups(target, statuses=ended, limit=20)
    if finished:
        m.backup_last_attempt.labels(target).set(
            _ts(finished[0].finished_at or finished[0].started_at)
        )
    # an attempt interrupted by the stop that preceded this start is neither good nor bad
    decided = next((b for b in finished if b.status != BackupStatus.INTERRUPTED), None)
    if decided is not None:
        m.backup_last_ok.labels(target).set(0 if decided.status == BackupStatus.FAILED else 1)
    if summary is not None and summary.last_success_at is not None:
        m.backup_last_success.labels(target).set(_ts(summary.last_success_at))
        if summary.last_success_duration_s is not None:
            m.backup_last_duration.labels(target).set(summary.last_success_duration_s)
        if summary.last_success_size_bytes is not None:
            m.backup_last_size.labels(target).set(summary.last_success_size_bytes)
    drills = [
        d
        for d in catalog.list_verifications(target=target, limit=DRILL_LOOKBACK)
        if d.status in VERIFY_STATUSES and d.finished_at is not None
    ]
    if drills:
        newest = drills[0]
        m.verify_last_ok.labels(target).set(1 if newest.status == DrillStatus.PASSED else 0)
        m.verify_last_duration.labels(target).set(_seconds(newest.started_at, newest.finished_at))
    passed = next((d for d in drills if d.status == DrillStatus.PASSED), None)
    if passed is not None:
        m.verify_last_success.labels(target).set(_ts(passed.finished_at or passed.started_at))


def _ts(value: datetime) -> float:
    return value.timestamp()


def _seconds(start: datetime, end: datetime | None) -> float:
    return max(((end or start) - start).total_seconds(), 0.0)


def _drop(metric: Gauge, *labels: str) -> None:
    try:
        metric.remove(*labels)
    except KeyError:
        return
