"""The running service without its process shell: jobs, schedules, pauses and reloads.

:class:`Service` owns the job pool, the scheduler, the pauses and the config in force (through
:class:`~pgwarden.service.state.ServiceState`).  It queues jobs, fires due schedules, records a
finished job's outcome and queues its follow-ups, and applies a reload, deciding itself whether
the new file is accepted.  What belongs to the process — signals, sd_notify, the watchdog, the
infrastructure threads, logging — is :mod:`.daemon`'s; the control socket's view of all this is
:mod:`.api`.  Every method may be called from any thread unless it says "main loop only".
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from pgwarden import config as config_mod
from pgwarden import logsetup
from pgwarden.config import Config
from pgwarden.config.kinds import JobKind
from pgwarden.control.api import ConfigSnapshot, ReloadResult, ReloadStatus
from pgwarden.errors import PgwardenError
from pgwarden.retention.subtargets import prune_units
from pgwarden.service import outcomes
from pgwarden.service.clock import Clock
from pgwarden.service.jobkinds import FollowUps
from pgwarden.service.jobs import Job, JobFunction, JobRunner, Trigger
from pgwarden.service.pauses import Pauses
from pgwarden.service.reload import ReloadRequests
from pgwarden.service.scheduler import ScheduleKey, Scheduler
from pgwarden.service.state import ServiceState, check_reloadable

log = logsetup.get_logger("pgwarden.daemon")

#: called after a reload swapped the config in (main loop only): the old and the new config;
#: it returns notes for the reload's answer (what it started or stopped)
Adopt = Callable[[Config, Config], tuple[str, ...]]
#: called before a reload swaps the config in (main loop only): the old and the new config;
#: it prepares what the new config needs (a TLS context, say) and raises PgwardenError to
#: reject the reload, the old config then staying in force
Prepare = Callable[[Config, Config], None]


class Service:
    def __init__(
        self,
        config_path: Path,
        state: ServiceState,
        functions: Mapping[JobKind, JobFunction],
        follow_ups: FollowUps,
        *,
        clock: Clock,
        wake: threading.Event,
    ) -> None:
        self.config_path = config_path
        self.state = state
        self.clock = clock
        self.wake = wake  # set whenever the main loop has something to do
        self.started_at = clock.now()
        self.stopping = threading.Event()  # no follow-up jobs once set
        self.pauses = Pauses()
        self.reloads = ReloadRequests(wake.set)
        self._follow_ups = follow_ups
        config = state.config
        self.runner = JobRunner(functions, config.daemon.max_parallel_jobs, self.after_job)
        self.scheduler = Scheduler(config, clock.now(), self._last_run)

    def _last_run(self, key: ScheduleKey) -> datetime | None:
        catalog = self.state.catalog
        target = next((t for t in self.state.config.targets if t.name == key.target), None)
        if target is None or not target.whole_server:
            return catalog.last_run(key.target, key.kind)
        # a whole-server target runs as its databases: the newest of their runs
        runs = [catalog.last_run(u.name, key.kind) for u in prune_units(target, catalog)]
        return max((r for r in runs if r is not None), default=None)

    def snapshot(self) -> ConfigSnapshot:
        config, loaded_at = self.state.config_and_time()
        return ConfigSnapshot(self.config_path, config, loaded_at)

    # -- jobs ------------------------------------------------------------------------------
    def submit(
        self,
        kind: JobKind,
        target: str,
        args: dict[str, Any] | None = None,
        trigger: Trigger = Trigger.MANUAL,
    ) -> tuple[Job, bool]:
        """Queue a job on the config in force; also whether an identical queued or running
        job was returned instead.  ``NotFoundError`` for an unknown target."""
        config = self.state.config
        config.target(target)
        return self.runner.offer(Job(kind, target, config, dict(args or {}), trigger))

    def after_job(self, job: Job) -> None:
        """Record a finished job's outcome, then queue what it leads to (job pool thread)."""
        outcomes.record_job(self.state, job)
        for follow in self._follow_ups(self.state.config, job):
            if self.stopping.is_set():
                break
            self.submit(follow.kind, follow.target, follow.args, Trigger.AFTER_BACKUP)
        self.wake.set()

    def fire_due(self) -> None:
        """Queue every schedule due now, except paused ones (main loop only)."""
        for entry in self.scheduler.due(self.clock.now()):
            target, kind = entry.key.target, entry.key.kind
            if self.pauses.is_paused(target):
                log.info("schedule skipped: paused", target=target, kind=kind)
                continue
            self.submit(
                kind, target, trigger=Trigger.CATCH_UP if entry.catch_up else Trigger.SCHEDULED
            )

    def update_job_gauges(self) -> None:
        counts = self.runner.running_count()
        for kind in JobKind:
            self.state.metrics.jobs_running.labels(kind).set(counts.get(kind, 0))

    def status_line(self) -> str:
        """The one-line status systemd shows."""
        running = self.runner.running_count()
        jobs = ", ".join(f"{n} {k}" for k, n in running.items()) or "idle"
        paused = " (paused)" if self.pauses.state().all else ""
        return f"{len(self.state.config.targets)} targets, {jobs}{paused}"

    # -- reload ----------------------------------------------------------------------------
    def serve_reloads(
        self, adopt: Adopt | None = None, prepare: Prepare | None = None
    ) -> ReloadResult:
        """Reload once for every request filed so far, and answer them (main loop only)."""
        requests = self.reloads.take()
        result = self.reload(adopt, prepare)
        self.reloads.answer(requests, result)
        return result

    def reload(self, adopt: Adopt | None = None, prepare: Prepare | None = None) -> ReloadResult:
        """Build the new config aside; swap it in only if valid (main loop only).

        A file that does not parse, fails validation or changes a setting in
        :data:`~pgwarden.service.state.RESTART_ONLY` is rejected: logged, counted, answered
        with every problem, and the old config stays in force.  So is one ``prepare`` refuses.
        """
        old = self.state.config
        try:
            new = config_mod.load(self.config_path)
            check_reloadable(old, new)
            if prepare is not None:
                prepare(old, new)
        except PgwardenError as exc:
            self.state.metrics.config_reloads.labels("failure").inc()
            self.state.metrics.config_last_reload_ok.set(0)
            log.error("reload rejected; the old configuration stays in force", error=str(exc))
            return ReloadResult(ReloadStatus.REJECTED, self.snapshot(), str(exc), exc.code)
        self.state.swap_config(new)
        notes = adopt(old, new) if adopt is not None else ()
        self.scheduler.update(new, self.clock.now(), self._last_run)
        self.runner.set_max_parallel(new.daemon.max_parallel_jobs)
        self._adopt_targets(old, new)
        self.state.metrics.config_reloads.labels("success").inc()
        self.state.metrics.config_last_reload_ok.set(1)
        log.info("configuration reloaded", targets=[t.name for t in new.targets])
        return ReloadResult(ReloadStatus.APPLIED, self.snapshot(), notes=notes)

    def _adopt_targets(self, old: Config, new: Config) -> None:
        old_names = {t.name for t in old.targets}
        new_names = {t.name for t in new.targets}
        for gone in old_names - new_names:
            self.state.metrics.forget_target(gone)
        for added in new_names - old_names:
            self.state.metrics.init_target(added)

    # -- shutdown --------------------------------------------------------------------------
    def shutdown(self) -> bool:
        """Stop taking jobs; give running ones ``shutdown_timeout``; True if all ended."""
        self.stopping.set()
        return self.runner.shutdown(self.state.config.daemon.shutdown_timeout)
