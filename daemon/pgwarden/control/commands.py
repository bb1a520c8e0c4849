"""The control socket's command table: one small handler per command, nothing else.

Each handler takes a :class:`~pgwarden.control.calls.Call` (the daemon seen through
:class:`~pgwarden.control.calls.DaemonView`, the validated
arguments, an ``emit`` for progress events, the peer) and returns the ``result`` object.  It
raises :class:`~pgwarden.errors.PgwardenError` (``ControlError`` for protocol codes) to answer
an error; the server turns anything else into an ``internal`` answer.

Decisions written down here:

- ``backup``/``verify``/``prune`` queue a job and answer at once with it; with ``wait`` they
  send ``progress`` events (at most 4 a second, and a heartbeat every 5 s) until the job ends,
  then answer with the finished job.  A failed job is still an ``ok`` answer: the request was
  served; its ``state`` says what happened (the CLI exits 1 for it).
- A manual ``backup``/``verify``/``prune`` runs even while its target is paused: ``pause``
  stops schedules only (maintenance windows), it does not overrule an operator.  Pauses live
  in memory and end with the process.
- ``reload`` validates the file itself first (pure), so a bad file is answered with every
  problem; then it asks the main loop to apply it and waits (<= 10 s) to see it in force.
- ``pin``/``unpin`` use the same function as ``pgwarden pin``
  (:func:`pgwarden.retention.reconcile.set_pin`): the catalog and the manifest, under the
  backup's lock.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from pgwarden import __version__
from pgwarden import config as config_mod
from pgwarden.catalog.records import BackupRecord, TargetSummary
from pgwarden.config.render import effective_dict
from pgwarden.control.calls import Call, DaemonView, Handler, StateView, follow, parts
from pgwarden.control.protocol import (
    BAD_ARGUMENT,
    BUSY,
    NOT_FOUND,
    PROTOCOL_VERSION,
    TIMEOUT,
    control_error,
)
from pgwarden.errors import CatalogError
from pgwarden.metrics import Metrics
from pgwarden.retention.reconcile import set_pin
from pgwarden.service.jobs import Job
from pgwarden.storage.locks import BackupLocks

RELOAD_WAIT = 10.0  # how long ``reload`` waits for the main loop to apply the file


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
        parts(call.daemon)[1].config.target(name)  # NotFoundError (not_found) when unknown
    return name


def _submit(call: Call, kind: str, target: str, job_args: dict[str, Any]) -> tuple[Job, bool]:
    """Queue a job; also whether an identical queued or running job was returned instead."""
    runner = parts(call.daemon)[0]
    before = {job.id for job in runner.jobs() if not job.finished}
    job = call.daemon.submit(kind, target, job_args, trigger="manual")
    return job, job.id in before


def _job_answer(call: Call, kind: str, target: str, job_args: dict[str, Any]) -> dict[str, Any]:
    wait = call.args.flag("wait")
    call.args.finish()
    job, existing = _submit(call, kind, target, job_args)
    if existing and job.args != job_args:
        raise control_error(
            BUSY,
            f"a {kind} of {target} with other options is already queued or running "
            f"(job {job.id}); try again when it has finished",
        )
    if wait:
        follow(call, job)
    return {"job": job.as_dict(), "existing": existing}


def _record(backup: BackupRecord) -> dict[str, Any]:
    out = asdict(backup)
    out["short_id"] = backup.short_id
    return out


def _summaries(state: StateView) -> tuple[dict[str, TargetSummary], str | None]:
    try:
        return state.catalog.summaries(), None
    except CatalogError as exc:
        return {}, str(exc)


def _last(summary: TargetSummary | None, history: list[Job]) -> dict[str, Any]:
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
    daemon = call.daemon
    runner, state, scheduler = parts(daemon)
    config = state.config
    jobs = runner.jobs()
    paused = set(daemon.paused)
    summaries, catalog_error = _summaries(state)
    started = daemon.metrics.registry.get_sample_value("pgwarden_start_time_seconds") or None
    targets = []
    for t in config.targets:
        mine = [j for j in jobs if j.target == t.name]
        targets.append(
            {
                "name": t.name,
                "paused": "*" in paused or t.name in paused,
                "next": scheduler.next_for(t.name),
                "running": [j.id for j in mine if j.state == "running"],
                "queued": [j.id for j in mine if j.state == "queued"],
                "last": _last(summaries.get(t.name), [j for j in mine if j.finished]),
            }
        )
    return {
        "version": __version__,
        "pid": os.getpid(),
        "started_at": datetime.fromtimestamp(started, UTC) if started else None,
        "uptime_s": round(time.time() - started, 1) if started else None,
        "config": {"path": str(daemon.config_path), "loaded_at": call.watch.observe(config)},
        "paused": {"all": "*" in paused, "targets": sorted(paused - {"*"})},
        "jobs": {
            "running": [j.as_dict() for j in jobs if j.state == "running"],
            "queued": [j.as_dict() for j in jobs if j.state == "queued"],
        },
        "targets": targets,
        "catalog_error": catalog_error,
    }


@command("jobs")
def jobs(call: Call) -> dict[str, Any]:
    target = call.args.opt_text("target")
    call.args.finish()
    runner = parts(call.daemon)[0]
    return {"jobs": [j.as_dict() for j in runner.jobs() if target in (None, j.target)]}


@command("job")
def job(call: Call) -> dict[str, Any]:
    job_id = call.args.text("id")
    wait = call.args.flag("wait")
    call.args.finish()
    found = parts(call.daemon)[0].get(job_id)
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
    # like ``pgwarden backup --tag``: a manual backup keeps its "manual" tag
    job_args = {"tags": list(dict.fromkeys(["manual", *tags]))} if tags else {}
    return _job_answer(call, "backup", target, job_args)


@command("verify")
def verify(call: Call) -> dict[str, Any]:
    target = _target(call, required=True)
    assert target is not None
    ref = call.args.opt_text("backup")
    job_args: dict[str, Any] = {}
    if ref is not None:
        job_args["backup"] = parts(call.daemon)[1].catalog.get_backup(ref, target).id
    return _job_answer(call, "verify", target, job_args)


@command("prune")
def prune(call: Call) -> dict[str, Any]:
    target = _target(call, required=False)
    dry_run = call.args.flag("dry_run")
    wait = call.args.flag("wait")
    call.args.finish()
    config = parts(call.daemon)[1].config
    names = [target] if target is not None else [t.name for t in config.targets]
    job_args: dict[str, Any] = {"dry_run": True} if dry_run else {}
    queued = []
    for name in names:
        found, existing = _submit(call, "prune", name, job_args)
        if existing and found.args != job_args:
            raise control_error(
                BUSY,
                f"a prune of {name} with other options is already queued or running "
                f"(job {found.id}); try again when it has finished",
            )
        queued.append(found)
    if wait:
        for found in queued:
            follow(call, found)
    return {"jobs": [found.as_dict() for found in queued], "dry_run": dry_run}


@command("backups")
def backups(call: Call) -> dict[str, Any]:
    target = call.args.opt_text("target")
    include_deleted = call.args.flag("all")
    call.args.finish()
    state = parts(call.daemon)[1]
    statuses = None if include_deleted else ("running", "complete", "failed", "interrupted")
    records = state.catalog.list_backups(target, statuses=statuses)
    if target is not None and not records:
        state.config.target(target)  # an unknown target is not_found; a known one just empty
    return {"backups": [_record(b) for b in records]}


def _pin(call: Call, pinned: bool) -> dict[str, Any]:
    target = _target(call, required=True)
    ref = call.args.text("backup")
    call.args.finish()
    state = parts(call.daemon)[1]
    locks = BackupLocks(state.config.daemon.state_dir)
    record = set_pin(state.catalog, state.storage, ref, pinned, target=target, locks=locks)
    return {"backup": _record(record)}


@command("pin")
def pin(call: Call) -> dict[str, Any]:
    return _pin(call, True)


@command("unpin")
def unpin(call: Call) -> dict[str, Any]:
    return _pin(call, False)


@command("reload")
def reload(call: Call) -> dict[str, Any]:
    call.args.finish()
    daemon = call.daemon
    state = parts(daemon)[1]
    new = config_mod.load(daemon.config_path)  # ConfigError (code "config") lists every problem
    state.check_reloadable(new)
    old = state.config
    failures = _reload_failures(daemon.metrics)
    daemon.request_reload()
    deadline = time.monotonic() + RELOAD_WAIT
    while time.monotonic() < deadline:
        current = state.config
        if current is not old:
            return {
                "reloaded": True,
                "config": str(daemon.config_path),
                "loaded_at": call.watch.observe(current),
                "targets": [t.name for t in current.targets],
            }
        if _reload_failures(daemon.metrics) > failures:
            raise control_error("config", "the daemon rejected the new configuration (see its log)")
        time.sleep(0.05)
    raise control_error(TIMEOUT, f"the reload was not applied within {RELOAD_WAIT:.0f} s")


def _reload_failures(metrics: Metrics) -> float:
    name = "pgwarden_config_reloads_total"
    value = metrics.registry.get_sample_value(name, {"result": "failure"})
    return value or 0.0


def _paused_answer(daemon: DaemonView) -> dict[str, Any]:
    paused = set(daemon.paused)
    return {"paused": {"all": "*" in paused, "targets": sorted(paused - {"*"})}}


@command("pause")
def pause(call: Call) -> dict[str, Any]:
    target = _target(call, required=False)
    call.args.finish()
    call.daemon.paused.add(target if target is not None else "*")
    return _paused_answer(call.daemon)


@command("resume")
def resume(call: Call) -> dict[str, Any]:
    target = _target(call, required=False)
    call.args.finish()
    paused = call.daemon.paused
    if target is None:
        paused.clear()
    else:
        if "*" in paused:  # all paused, resume one: pause the others by name, then lift "*"
            others = {t.name for t in parts(call.daemon)[1].config.targets} - {target}
            paused.update(others)
            paused.discard("*")
        paused.discard(target)
    return _paused_answer(call.daemon)


@command("config")
def config(call: Call) -> dict[str, Any]:
    call.args.finish()
    current = parts(call.daemon)[1].config
    return {
        "path": str(call.daemon.config_path),
        "loaded_at": call.watch.observe(current),
        "config": effective_dict(current),
    }
