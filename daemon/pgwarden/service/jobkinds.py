"""The daemon's job kinds: what a backup, a restore drill or a prune of one target runs, and
which jobs a finished one leads to.

Each job function takes the :class:`~pgwarden.service.jobs.Job` (config snapshot, args, cancel
event, progress reporting) and the daemon's :class:`~pgwarden.service.state.ServiceState`
(catalog, storage, metrics), calls the part that does the work and returns that part's typed
outcome.  A drill that fails raises :class:`~pgwarden.restore.outcome.DrillFailed`; its outcome
stays on the job, so every check's result is visible (``ctl``, metrics).

:func:`follow_ups`: a successful backup is followed by a prune of its target, and by a drill of
that very backup first when ``[targets.verify] after_backup`` is set, and by its off-site run
(:mod:`.offsite_job`) before the prune when the target has ``[[offsite]]`` destinations.
A backup runs at its ``[targets.backup] priority``: ``auto`` is low for a run tagged
``scheduled`` (scheduled, catch-up, and the per-database jobs of such a whole-server run), on a
fresh thread (:mod:`pgwarden.pg.priority`), never lowering the job worker itself; a drill at
``[targets.verify] priority`` (``auto``: low unless an operator started it).  The
hourly scheduled ``offsite`` run (:data:`.offsite_job.OFFSITE_RETRY_SCHEDULE`) retries copies a
failed run left pending, and does nothing (not even an S3 request) when there are none.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pgwarden.backup.offsite import UploadOutcome
from pgwarden.backup.request import request_priority, run_request
from pgwarden.backup.server import prepare_server_run
from pgwarden.backup.take import BackupOutcome, BackupRequest, take_backup
from pgwarden.config import Config
from pgwarden.config.kinds import JobKind
from pgwarden.errors import NotFoundError
from pgwarden.logsetup import get_logger
from pgwarden.pg.binaries import Tool
from pgwarden.pg.conninfo import ConnSpec
from pgwarden.pg.priority import resolve, run_at
from pgwarden.restore.drill import VerifyRequest, run_verification
from pgwarden.restore.outcome import DrillFailed, VerifyOutcome
from pgwarden.retention.lastprune import PruneRecords, recorded_prune
from pgwarden.retention.prune import PruneFailed, PruneOutcome
from pgwarden.retention.subtargets import next_drill, prune_units, stale_globals
from pgwarden.service.fanout import FanOutOutcome
from pgwarden.service.jobs import Job, JobFunction, JobState, Trigger
from pgwarden.service.offsite_job import (
    OffsiteFailed,
    OffsiteJobOutcome,
    OffsiteRun,
    has_pending,
    run_offsite,
)
from pgwarden.service.state import ServiceState
from pgwarden.storage.locks import BackupLocks

log = get_logger("pgwarden.service")


@dataclass(frozen=True)
class FollowUp:
    """A job a finished job leads to."""

    kind: JobKind
    target: str
    args: dict[str, Any] = field(default_factory=dict)


FollowUps = Callable[[Config, Job], list[FollowUp]]


def _tags(job: Job) -> tuple[str, ...]:
    given = job.args.get("tags")
    if isinstance(given, list | tuple) and given:
        return tuple(str(t) for t in given)
    return ("scheduled",) if job.trigger in (Trigger.SCHEDULED, Trigger.CATCH_UP) else ("manual",)


def backup_job(job: Job, state: ServiceState) -> BackupOutcome | FanOutOutcome:
    target = job.config.target(job.target)
    metrics = state.metrics
    tags = _tags(job)  # "scheduled" (scheduled, catch-up and their fan-out): auto is low
    priority = request_priority(target, tags, job.args.get("priority"))
    if target.whole_server:  # the globals, then one backup job per database (.fanout)
        request = BackupRequest(target, job.config, state.catalog, state.storage, tags)
        request.cancel, request.progress, request.priority = job.cancel, job.report, priority
        spec = ConnSpec.from_target(target)
        path, found = run_request(request, lambda r: prepare_server_run(r, spec))
        if found.unnamable:
            log.warning("databases not backed up", target=target.name, names=found.unnamable)
        subs = tuple(target.for_database(d).name for d in found.databases)
        return FanOutOutcome(
            JobKind.BACKUP, target.name, subs, str(path), found.excluded, found.unnamable
        )

    def on_tool(tool: Tool | None) -> None:
        metrics.pg_dump_compatible.labels(target.name).set(1 if tool is not None else 0)

    def on_space(ok: bool, free: int) -> None:
        metrics.space_ok.labels(target.name).set(1 if ok else 0)
        metrics.storage_free.set(free)

    request = BackupRequest(
        target,
        job.config,
        state.catalog,
        state.storage,
        tags,
        cancel=job.cancel,
        progress=job.report,
        on_tool=on_tool,
        on_space=on_space,
        priority=priority,
    )
    return run_request(request, take_backup)


def verify_job(job: Job, state: ServiceState) -> VerifyOutcome | FanOutOutcome:
    target = job.config.target(job.target)
    if target.whole_server:  # the drill rotates over the databases: the least recently drilled
        chosen = next_drill(target, state.catalog)
        subs = () if chosen is None else (chosen.name,)
        return FanOutOutcome(JobKind.VERIFY, target.name, subs)
    request = VerifyRequest(
        target,
        job.config,
        state.catalog,
        state.storage,
        backup_ref=job.args.get("backup"),
        cancel=job.cancel,
        progress=job.report,
    )
    # a drill loads the same server: low like a scheduled backup unless an operator asked
    # (``ctl verify --priority`` sets it for this run)
    setting = job.args.get("priority") or target.verify.priority
    priority = resolve(setting, scheduled=job.trigger != Trigger.MANUAL)
    try:
        return run_at(
            priority, lambda: run_verification(request), cancel=job.cancel, name="drill-low"
        )
    except DrillFailed as exc:
        job.result = exc.outcome  # every check's result stays visible (ctl, metrics)
        raise


def prune_job(job: Job, state: ServiceState) -> PruneOutcome | FanOutOutcome:
    target = job.config.target(job.target)
    if target.whole_server:  # every database with backups, dropped ones included
        if not job.args.get("dry_run"):
            for path in stale_globals(target, state.catalog, state.storage):
                state.storage.delete(path)
                log.info("globals file deleted", target=target.name, path=str(path))
        subs = tuple(u.name for u in prune_units(target, state.catalog))
        return FanOutOutcome(JobKind.PRUNE, target.name, subs)
    dry_run = bool(job.args.get("dry_run", False))
    locks = BackupLocks(job.config.daemon.state_dir)
    records = PruneRecords(job.config.daemon.state_dir)  # what pgwarden check shows
    outcome = recorded_prune(
        target, state.catalog, state.storage, dry_run=dry_run, locks=locks, records=records
    )
    if not outcome.ok:
        job.result = outcome  # what happened to each backup stays visible (ctl, metrics)
        raise PruneFailed(outcome)
    return outcome


def offsite_job(job: Job, state: ServiceState) -> OffsiteJobOutcome | FanOutOutcome:
    """Upload what the target's destinations miss, prune them (``args``: ``destination``)."""
    target = job.config.target(job.target)
    if target.whole_server:
        subs = tuple(u.name for u in prune_units(target, state.catalog))
        return FanOutOutcome(JobKind.OFFSITE, target.name, subs)
    destination = job.args.get("destination")
    if destination is not None:
        job.config.destination(str(destination))  # NotFoundError naming the configured ones
    sent = 0

    def progress(count: int) -> None:
        nonlocal sent
        sent += count
        job.report(phase="uploading", bytes=sent)

    run = OffsiteRun(
        target,
        job.config,
        state.catalog,
        state.storage,
        cancel=job.cancel,
        destinations=None if destination is None else (str(destination),),
        progress=progress,
    )
    if job.trigger in (Trigger.SCHEDULED, Trigger.CATCH_UP) and not has_pending(run):
        return OffsiteJobOutcome(target.name, UploadOutcome(target.name, ()))  # the hourly retry
    outcome = run_offsite(run)
    if not outcome.ok:
        job.result = outcome  # what happened per destination stays visible (ctl, metrics)
        raise OffsiteFailed(outcome)
    return outcome


def job_functions(state: ServiceState) -> dict[JobKind, JobFunction]:
    """The function each job kind runs, bound to ``state``."""
    return {
        JobKind.BACKUP: lambda job: backup_job(job, state),
        JobKind.VERIFY: lambda job: verify_job(job, state),
        JobKind.PRUNE: lambda job: prune_job(job, state),
        JobKind.OFFSITE: lambda job: offsite_job(job, state),
    }


def follow_ups(config: Config, job: Job) -> list[FollowUp]:
    """The jobs ``job`` leads to under ``config`` (the config in force when it finished)."""
    if isinstance(job.result, FanOutOutcome) and job.state == JobState.SUCCEEDED:
        # backup: the run's tags; prune, offsite: dry_run, destination; a drill: its own pick;
        # a backup's or a drill's priority asked for the whole server: each database's too
        args: dict[str, Any] = {"tags": list(_tags(job))} if job.kind == JobKind.BACKUP else {}
        if job.kind in (JobKind.PRUNE, JobKind.OFFSITE):
            args = dict(job.args)
        elif "priority" in job.args:
            args["priority"] = job.args["priority"]
        return [FollowUp(job.kind, sub, dict(args)) for sub in job.result.sub_targets]
    if job.kind != JobKind.BACKUP or job.state != JobState.SUCCEEDED:
        return []
    if not isinstance(job.result, BackupOutcome):
        return []
    try:  # a whole-server target's database resolves to its sub-target
        target = config.target(job.target)
    except NotFoundError:  # removed by a reload while its backup ran
        return []
    follow: list[FollowUp] = []
    if target.verify.enabled and target.verify.after_backup:
        follow.append(FollowUp(JobKind.VERIFY, target.name, {"backup": job.result.backup_id}))
    if config.offsite_for(target):  # before the local prune, which the upload's lock holds off
        follow.append(FollowUp(JobKind.OFFSITE, target.name))
    follow.append(FollowUp(JobKind.PRUNE, target.name))
    return follow
