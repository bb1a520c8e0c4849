"""The daemon's job functions: a backup, a restore drill or a prune of one target.

Each takes the :class:`~pgwarden.service.jobs.Job` (config snapshot, args, cancel event,
progress reporting) and the daemon's :class:`~pgwarden.service.state.ServiceState` (catalog,
storage, metrics), calls the part that does the work and returns a JSON-able result.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pgwarden.backup.take import BackupRequest, take_backup
from pgwarden.pg.binaries import Tool

if TYPE_CHECKING:
    from pgwarden.service.jobs import Job
    from pgwarden.service.state import ServiceState


def _tags(job: Job) -> tuple[str, ...]:
    given = job.args.get("tags")
    if isinstance(given, list | tuple) and given:
        return tuple(str(t) for t in given)
    return ("scheduled",) if job.trigger in ("scheduled", "catch-up") else ("manual",)


def backup_job(job: Job, state: ServiceState) -> dict[str, Any]:
    target = job.config.target(job.target)
    metrics = state.metrics

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
        _tags(job),
        cancel=job.cancel,
        progress=job.report,
        on_tool=on_tool,
        on_space=on_space,
    )
    return take_backup(request).as_dict()


def verify_job(job: Job, state: ServiceState) -> dict[str, Any]:
    from pgwarden.restore.drill import VerifyRequest, run_verification
    from pgwarden.restore.outcome import DrillFailed

    target = job.config.target(job.target)
    request = VerifyRequest(
        target,
        job.config,
        state.catalog,
        state.storage,
        backup_ref=job.args.get("backup"),
        cancel=job.cancel,
        progress=job.report,
    )
    try:
        return run_verification(request).as_dict()
    except DrillFailed as exc:
        job.result = exc.outcome.as_dict()  # every check's result stays visible (ctl, metrics)
        raise


def prune_job(job: Job, state: ServiceState) -> dict[str, Any]:
    from pgwarden.retention.prune import prune_target
    from pgwarden.storage.locks import BackupLocks

    target = job.config.target(job.target)
    dry_run = bool(job.args.get("dry_run", False))
    locks = BackupLocks(job.config.daemon.state_dir)
    return prune_target(
        target, state.catalog, state.storage, dry_run=dry_run, locks=locks
    ).as_dict()
