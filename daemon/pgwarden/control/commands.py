"""The control socket's command table: one small handler per command, nothing else.

Each handler takes a :class:`~pgwarden.control.calls.Call` (the service seen through
:class:`~pgwarden.control.api.DaemonApi`, the validated arguments, an ``emit`` for progress
events, the peer) and returns the ``result`` object: this module turns the API's typed answers
into the socket's JSON.  It raises :class:`~pgwarden.errors.PgwardenError` (``ControlError``
for protocol codes) to answer an error; the server turns anything else into an ``internal``
answer.

Decisions written down here:

- ``backup``/``verify``/``prune``/``offsite`` queue a job and answer at once with it; with
  ``wait`` they send ``progress`` events (at most 4 a second, and a heartbeat every 5 s) until
  the job ends, then answer with the finished job.  A failed job is still an ``ok`` answer:
  the request was served; its ``state`` says what happened (the CLI exits 1 for it).
- A manual ``backup``/``verify``/``prune`` runs even while its target is paused: ``pause``
  stops schedules only (maintenance windows), it does not overrule an operator.  Pauses live
  in memory and end with the process.
- ``reload`` asks the service, which reads the file once, applies it or rejects it (every
  problem listed) and answers; the handler waits for that answer up to :data:`RELOAD_WAIT`.
- ``pin``/``unpin`` go through the service, which uses the same function as ``pgwarden pin``:
  the catalog and the manifest, under the backup's lock.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from pgwarden import __version__
from pgwarden.catalog.records import BackupRecord, TargetSummary
from pgwarden.config.kinds import JobKind
from pgwarden.config.render import effective_dict
from pgwarden.control.api import (
    DaemonStatus,
    JobRequest,
    JobView,
    PauseState,
    ReloadStatus,
    TargetStatus,
)
from pgwarden.control.calls import Call, Handler, follow
from pgwarden.control.protocol import (
    BAD_ARGUMENT,
    NOT_FOUND,
    PROTOCOL_VERSION,
    TIMEOUT,
    control_error,
)
from pgwarden.pg.priority import Priority

RELOAD_WAIT = 10.0  # how long ``reload`` waits for the main loop to apply the file
PRIORITIES = tuple(p.value for p in Priority)  # what ``priority`` may ask of one run


COMMANDS: dict[str, Handler] = {}


def command(name: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        COMMANDS[name] = fn
        return fn

    return register


# -- helpers -------------------------------------------------------------------------------
def _target(call: Call, required: bool) -> str | None:
    name = call.args.text("target") if required else call.args.opt_text("target")
    if name is not None:
        call.api.config().config.target(name)  # NotFoundError (not_found) when unknown
    return name


def _job_answer(call: Call, request: JobRequest) -> dict[str, Any]:
    wait = call.args.flag("wait")
    call.args.finish()
    submitted = call.api.submit(request)  # BusyError when one with other options runs
    if wait:
        follow(call, submitted.job)
    return {"job": submitted.job.as_dict(), "existing": submitted.existing}


def _record(backup: BackupRecord) -> dict[str, Any]:
    out = asdict(backup)
    out["short_id"] = backup.short_id
    return out


def _paused(paused: PauseState) -> dict[str, Any]:
    return {"all": paused.all, "targets": sorted(paused.targets)}


def _last(summary: TargetSummary | None, history: Sequence[JobView]) -> dict[str, Any]:
    """Last outcomes of one target: the catalog's history, the newest jobs of this process."""
    out: dict[str, Any] = {}
    if summary is not None:
        out["backup"] = {
            "attempt_at": summary.last_attempt_at,
            "attempt_status": summary.last_attempt_status,
            "success_at": summary.last_success_at,
            "success_size_bytes": summary.last_success_size_bytes,
            "complete_count": summary.complete_count,
        }
        out["verify"] = {
            "at": summary.last_verification_at,
            "status": summary.last_verification_status,
        }
    for job in history:  # newest first
        entry = out.setdefault(job.kind, {})
        if "job" not in entry:
            entry["job"] = {
                "id": job.id,
                "state": job.state,
                "finished_at": job.finished_at,
                "error": job.error,
            }
    return out


def _target_answer(target: TargetStatus, jobs: Sequence[JobView]) -> dict[str, Any]:
    mine = [j for j in jobs if j.target == target.name]
    return {
        "name": target.name,
        "paused": target.paused,
        "next": {kind: due.isoformat() for kind, due in target.next_runs.items()},
        "running": [j.id for j in mine if j.state == "running"],
        "queued": [j.id for j in mine if j.state == "queued"],
        "last": _last(target.summary, [j for j in mine if j.finished]),
    }


def _status_answer(status: DaemonStatus) -> dict[str, Any]:
    jobs = status.jobs
    started = status.started_at
    return {
        "version": __version__,
        "pid": os.getpid(),
        "started_at": started,
        "uptime_s": round(time.time() - started.timestamp(), 1),
        "config": {"path": str(status.config.path), "loaded_at": status.config.loaded_at},
        "paused": _paused(status.paused),
        "jobs": {
            "running": [j.as_dict() for j in jobs if j.state == "running"],
            "queued": [j.as_dict() for j in jobs if j.state == "queued"],
        },
        "targets": [_target_answer(t, jobs) for t in status.targets],
        "catalog_error": status.catalog_error,
        "offsite": [asdict(d) for d in status.offsite],
    }


# -- commands ------------------------------------------------------------------------------
@command("hello")
def hello(call: Call) -> dict[str, Any]:
    call.args.finish()
    return {
        "server": "pgwarden",
        "protocol": PROTOCOL_VERSION,
        "version": __version__,
        "pid": os.getpid(),
        "commands": sorted(COMMANDS),
        "peer": {"uid": call.peer.uid, "user": call.peer.user},
    }


@command("status")
def status(call: Call) -> dict[str, Any]:
    call.args.finish()
    return _status_answer(call.api.status())


@command("jobs")
def jobs(call: Call) -> dict[str, Any]:
    target = call.args.opt_text("target")
    call.args.finish()
    return {"jobs": [j.as_dict() for j in call.api.jobs() if target in (None, j.target)]}


@command("job")
def job(call: Call) -> dict[str, Any]:
    job_id = call.args.text("id")
    wait = call.args.flag("wait")
    call.args.finish()
    found = call.api.job(job_id)
    if found is None:
        raise control_error(NOT_FOUND, f"no job {job_id!r} (the daemon keeps the last 200)")
    if wait:
        follow(call, found)
    return {"job": found.as_dict()}


@command("backup")
def backup(call: Call) -> dict[str, Any]:
    target = _target(call, required=True)
    assert target is not None
    tags = call.args.text_list("tags")
    for tag in tags:
        if len(tag) > 64 or not tag.isprintable() or " " in tag:
            raise control_error(BAD_ARGUMENT, f"backup: tag {tag!r} is not a short word")
    priority = _priority(call)
    return _job_answer(
        call, JobRequest(JobKind.BACKUP, target, tags=tuple(tags), priority=priority)
    )


@command("verify")
def verify(call: Call) -> dict[str, Any]:
    target = _target(call, required=True)
    assert target is not None
    ref = call.args.opt_text("backup")
    priority = _priority(call)
    return _job_answer(call, JobRequest(JobKind.VERIFY, target, backup=ref, priority=priority))


def _priority(call: Call) -> str | None:
    """``priority``: ``low`` or ``normal`` for this run (default: the target's setting)."""
    priority = call.args.opt_text("priority")
    if priority is not None and priority not in PRIORITIES:
        raise control_error(
            BAD_ARGUMENT,
            f"{call.args.cmd}: priority must be {' or '.join(PRIORITIES)} (got {priority!r})",
        )
    return priority


@command("offsite")
def offsite(call: Call) -> dict[str, Any]:
    target = _target(call, required=True)
    assert target is not None
    destination = call.args.opt_text("destination")
    return _job_answer(call, JobRequest(JobKind.OFFSITE, target, destination=destination))


@command("prune")
def prune(call: Call) -> dict[str, Any]:
    target = _target(call, required=False)
    dry_run = call.args.flag("dry_run")
    wait = call.args.flag("wait")
    call.args.finish()
    config = call.api.config().config
    names = [target] if target is not None else [t.name for t in config.targets]
    queued = [
        call.api.submit(JobRequest(JobKind.PRUNE, name, dry_run=dry_run)).job for name in names
    ]
    if wait:
        for found in queued:
            follow(call, found)
    return {"jobs": [found.as_dict() for found in queued], "dry_run": dry_run}


@command("backups")
def backups(call: Call) -> dict[str, Any]:
    target = call.args.opt_text("target")
    include_deleted = call.args.flag("all")
    call.args.finish()
    records = call.api.backups(target, include_deleted=include_deleted)
    return {"backups": [_record(b) for b in records]}


def _pin(call: Call, pinned: bool) -> dict[str, Any]:
    target = _target(call, required=True)
    assert target is not None
    ref = call.args.text("backup")
    call.args.finish()
    return {"backup": _record(call.api.set_pin(target, ref, pinned=pinned))}


@command("pin")
def pin(call: Call) -> dict[str, Any]:
    return _pin(call, True)


@command("unpin")
def unpin(call: Call) -> dict[str, Any]:
    return _pin(call, False)


@command("reload")
def reload(call: Call) -> dict[str, Any]:
    call.args.finish()
    result = call.api.reload(RELOAD_WAIT)
    if result.status is ReloadStatus.PENDING:
        raise control_error(TIMEOUT, f"the reload was not applied within {RELOAD_WAIT:.0f} s")
    if result.status is ReloadStatus.REJECTED:
        # every problem, with its key path; "config" answers exit 2 in the CLI
        raise control_error(result.error_code or "config", result.error or "reload rejected")
    snapshot = result.config
    return {
        "reloaded": True,
        "config": str(snapshot.path),
        "loaded_at": snapshot.loaded_at,
        "targets": [t.name for t in snapshot.config.targets],
    }


@command("pause")
def pause(call: Call) -> dict[str, Any]:
    target = _target(call, required=False)
    call.args.finish()
    return {"paused": _paused(call.api.pause(target))}


@command("resume")
def resume(call: Call) -> dict[str, Any]:
    target = _target(call, required=False)
    call.args.finish()
    return {"paused": _paused(call.api.resume(target))}


@command("config")
def config(call: Call) -> dict[str, Any]:
    call.args.finish()
    snapshot = call.api.config()
    return {
        "path": str(snapshot.path),
        "loaded_at": snapshot.loaded_at,
        "config": effective_dict(snapshot.config),
    }
