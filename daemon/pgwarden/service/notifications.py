"""From what the daemon did to :class:`~pgwarden.notify.Event`\\ s for the ``[[notify]]``
destinations.

* a backup job's start (:func:`with_start_events` wraps the backup job function) and its end:
  ``backup.start``, then ``backup.success`` or ``backup.failure`` with the same ``run_id`` (a
  UUID derived from the job id: a healthchecks ``rid``);
* a drill's end: ``verify.success`` or ``verify.failure``; a prune or an off-site run that
  failed: ``prune.failure``, ``offsite.failure``; a backup or drill cancelled by its
  ``stall_timeout``: ``stalled`` as well (:func:`job_finished`, from
  :func:`~pgwarden.service.outcomes.record_job`);
* the daemon's start and stop (:mod:`.daemon`).

A cancelled job tells nobody (an operator or a shutdown stopped it).  The dispatcher is
``ServiceState.notify`` (``None``: notifications are off, e.g. in a one-shot command); handing
it an event never blocks and never raises into the job.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping

from pgwarden import logsetup
from pgwarden.backup.take import BackupOutcome
from pgwarden.config import Config
from pgwarden.config.kinds import JobKind
from pgwarden.errors import PgwardenError, StallError
from pgwarden.notify import Dispatcher, Event
from pgwarden.pg.conninfo import dsn_params
from pgwarden.restore.outcome import VerifyOutcome
from pgwarden.retention.prune import PruneOutcome
from pgwarden.service.fanout import FanOutOutcome
from pgwarden.service.jobs import Job, JobFunction, JobResult, JobState
from pgwarden.service.offsite_job import OffsiteJobOutcome
from pgwarden.service.state import ServiceState

log = logsetup.get_logger("pgwarden.notify")

_RUN_NAMESPACE = uuid.UUID("6f1c7b52-3f0e-4a55-9a51-2b8f0c4f9d11")


def run_id(job: Job) -> str:
    """The run's UUID (stable for the job: its start and its end carry the same one)."""
    return str(uuid.uuid5(_RUN_NAMESPACE, job.id))


def database_of(config: Config, target: str) -> str | None:
    """The database a target dumps (from its DSN), for the payload."""
    try:
        return dsn_params(config.target(target).dsn).get("dbname")
    except PgwardenError:
        return None


def with_start_events(
    functions: Mapping[JobKind, JobFunction], state: ServiceState
) -> dict[JobKind, JobFunction]:
    """The job functions, the backup one telling ``backup.start`` before it runs."""
    out = dict(functions)
    backup = out.get(JobKind.BACKUP)
    if backup is not None:
        out[JobKind.BACKUP] = _announcing(backup, state)
    return out


def _announcing(function: JobFunction, state: ServiceState) -> Callable[[Job], JobResult]:
    def run(job: Job) -> JobResult:
        _emit(state.notify, _event("backup.start", job))
        return function(job)

    return run


def job_finished(state: ServiceState, job: Job) -> None:
    """Tell the destinations how a finished job ended (a cancelled one: nothing)."""
    for event in job_events(job):
        _emit(state.notify, event)


def job_events(job: Job) -> tuple[Event, ...]:
    """The events of one finished job."""
    if job.state not in (JobState.SUCCEEDED, JobState.FAILED):
        return ()
    ok = job.state == JobState.SUCCEEDED
    outcome = job.result
    if isinstance(outcome, FanOutOutcome):
        return ()  # a whole-server target's jobs per database notify for themselves
    events: list[Event] = []
    if job.kind == JobKind.BACKUP:
        backup = outcome if isinstance(outcome, BackupOutcome) else None
        events.append(_backup_event(job, backup, ok))
    elif job.kind == JobKind.VERIFY:
        drill = outcome if isinstance(outcome, VerifyOutcome) else None
        events.append(_verify_event(job, drill, ok))
    elif job.kind == JobKind.PRUNE:
        prune = outcome if isinstance(outcome, PruneOutcome) else None
        dry = prune.dry_run if prune is not None else bool(job.args.get("dry_run"))
        if not ok and not dry:
            events.append(_event("prune.failure", job, error=job.error or "prune failed"))
    elif job.kind == JobKind.OFFSITE:
        offsite = outcome if isinstance(outcome, OffsiteJobOutcome) else None
        if not ok or (offsite is not None and not offsite.ok):
            events.append(_event("offsite.failure", job, error=_offsite_error(job, offsite)))
    stalled = job.error_code == StallError.code or (
        isinstance(outcome, VerifyOutcome) and outcome.stalled
    )
    if stalled:
        events.append(_event("stalled", job, error=job.error or f"{job.kind.value} stalled"))
    return tuple(events)


def _backup_event(job: Job, backup: BackupOutcome | None, ok: bool) -> Event:
    if ok and backup is not None:
        return _event(
            "backup.success",
            job,
            backup_id=backup.backup_id,
            size_bytes=backup.size_bytes,
            duration_s=backup.duration_s,
        )
    return _event("backup.failure", job, error=job.error or "backup failed")


def _verify_event(job: Job, drill: VerifyOutcome | None, ok: bool) -> Event:
    passed = ok and drill is not None and drill.passed
    backup_id = drill.backup_id if drill is not None else None
    duration = drill.duration_s if drill is not None else None
    if passed:
        return _event("verify.success", job, backup_id=backup_id, duration_s=duration)
    error = job.error
    if error is None and drill is not None:
        failed = [c.name for c in drill.checks if not c.passed]
        error = f"restore drill {drill.status}: failed checks: {', '.join(failed) or 'none'}"
    return _event(
        "verify.failure",
        job,
        error=error or "restore drill failed",
        backup_id=backup_id,
        duration_s=duration,
    )


def _offsite_error(job: Job, offsite: OffsiteJobOutcome | None) -> str:
    if job.error:
        return job.error
    if offsite is None:
        return "off-site run failed"
    problems = [*offsite.uploads.reasons]
    problems += [f"{c.destination}: {c.error}" for c in offsite.uploads.copies if c.error]
    problems += [f"{p.destination}: {e}" for p in offsite.prunes for e in p.errors]
    return "; ".join(problems[:5]) or "off-site run failed"


def _event(
    name: str,
    job: Job,
    *,
    error: str | None = None,
    backup_id: str | None = None,
    size_bytes: int | None = None,
    duration_s: float | None = None,
) -> Event:
    return Event(
        name,
        target=job.target,
        database=database_of(job.config, job.target),
        backup_id=backup_id,
        size_bytes=size_bytes,
        duration_s=duration_s,
        error=error,
        run_id=run_id(job),
        job_id=job.id,
    )


def daemon_event(dispatcher: Dispatcher | None, name: str) -> None:
    """``daemon.start`` / ``daemon.stop`` (to every destination that asked for it)."""
    _emit(dispatcher, Event(name))


def _emit(dispatcher: Dispatcher | None, event: Event) -> None:
    if dispatcher is None:
        return
    try:
        dispatcher.emit(event)
    except Exception as exc:  # noqa: BLE001 - a notification never fails a job
        log.error("cannot queue a notification", notify_event=event.event, error=repr(exc))
