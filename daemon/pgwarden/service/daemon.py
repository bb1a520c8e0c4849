"""``pgwarden run``: the daemon's main thread — start-up, the main loop, reload and shutdown.

Start-up: validate the config, open the catalog (Alembic upgrade), recover from a crash
(leftover ``.partial`` files removed, runs still marked running marked interrupted, leftover
scratch databases dropped), restore history gauges from the catalog, start the threads (job
pool, monitor, metrics HTTP, control socket), then ``READY=1``.

Main loop: fire due schedules into the job pool, ping the watchdog only while every thread is
alive, apply a requested reload.  Signal handlers only set flags and wake the loop.  A dead
infrastructure thread is fatal: exit 1 and let systemd restart us.  ``SIGTERM``/``SIGINT``:
``STOPPING=1``, no new jobs, running ones get ``shutdown_timeout`` then are aborted; exit 0.
"""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

from pgwarden import config as config_mod
from pgwarden import logsetup
from pgwarden.config import Config
from pgwarden.errors import ConfigError, PgwardenError
from pgwarden.metrics import Metrics, MetricsServer
from pgwarden.service.clock import Clock, SystemClock
from pgwarden.service.jobs import Job, JobRunner
from pgwarden.service.scheduler import ScheduleKey, Scheduler
from pgwarden.service.sdnotify import Notifier
from pgwarden.service.state import ServiceState

log = logsetup.get_logger("pgwarden.daemon")

TICK = 1.0  # longest sleep of the main loop (seconds): bounds reaction to thread deaths


@dataclass
class _Flags:
    stop: bool = False
    reload: bool = False
    signal_name: str = ""


class Daemon:
    def __init__(
        self,
        config_path: Path,
        *,
        clock: Clock | None = None,
        notifier: Notifier | None = None,
        install_signals: bool = True,
    ) -> None:
        self.config_path = config_path
        self.clock = clock or SystemClock()
        self.notifier = notifier or Notifier()
        self.install_signals = install_signals
        self.wake = threading.Event()
        self.flags = _Flags()
        self.metrics = Metrics()
        self.state: ServiceState | None = None
        self.scheduler: Scheduler | None = None
        self.runner: JobRunner | None = None
        self.paused: set[str] = set()  # target names, "*" for all
        self.fatal: str | None = None
        self._threads: dict[str, threading.Thread] = {}
        self._metrics_server: MetricsServer | None = None
        self._control: Any = None
        self._monitor: Any = None
        self.started = threading.Event()

    # -- signals ---------------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self.flags.reload = True
        else:
            self.flags.stop = True
            self.flags.signal_name = signal.Signals(signum).name
        self.wake.set()

    def request_stop(self) -> None:
        self.flags.stop = True
        self.wake.set()

    def request_reload(self) -> None:
        self.flags.reload = True
        self.wake.set()

    # -- start-up --------------------------------------------------------------------------
    def start(self) -> Config:
        config = config_mod.load(self.config_path)
        logsetup.configure(config.daemon.log_level, config.daemon.log_format)
        from pgwarden.control.server import ControlServer

        # claim the control socket first: a second daemon on the same config must refuse
        # before its crash recovery could disturb the first one's running jobs
        control = ControlServer(self, config.daemon)
        control.claim()
        self._control = control
        self.state = ServiceState.open(config, self.metrics)
        self.state.recover()
        self.metrics.start_time.set(self.clock.now().timestamp())
        self.runner = JobRunner(
            self.state.job_functions(), config.daemon.max_parallel_jobs, self._after_job
        )
        self.scheduler = Scheduler(config, self.clock.now(), self._last_run)
        self.runner.start()
        self._start_infrastructure(config)
        if self.install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, self._on_signal)
        log.info(
            "pgwarden started",
            config=str(self.config_path),
            targets=[t.name for t in config.targets],
            metrics=config.metrics.listen if config.metrics.enabled else None,
            socket=str(config.daemon.socket),
        )
        self.notifier.ready(self._status_line())
        self.started.set()
        return config

    def _start_infrastructure(self, config: Config) -> None:
        assert self.state is not None
        if config.metrics.enabled:
            try:
                self._metrics_server = MetricsServer.from_config(self.metrics, config, self.healthy)
            except OSError as exc:
                raise PgwardenError(
                    f"metrics.listen: cannot listen on {config.metrics.listen}: {exc.strerror}"
                    " (another pgwarden, or another exporter, uses that port)"
                ) from exc
            self._metrics_server.start()
            self._threads["metrics-http"] = self._metrics_server.thread
        self._monitor = self.state.start_monitor(self)
        if self._monitor is not None:
            self._threads["monitor"] = self._monitor.thread
        self._control.start()
        self._threads["control"] = self._control.thread

    def _last_run(self, key: ScheduleKey) -> datetime | None:
        assert self.state is not None
        return self.state.last_run(key.target, key.kind)

    # -- health ----------------------------------------------------------------------------
    def dead_threads(self) -> list[str]:
        dead = [name for name, thread in self._threads.items() if not thread.is_alive()]
        if self.runner is not None and not self.runner.alive():
            dead.append("job-pool")
        return dead

    def healthy(self) -> bool:
        return self.fatal is None and not self.dead_threads()

    def _status_line(self) -> str:
        if self.runner is None or self.state is None:
            return "starting"
        running = self.runner.running_count()
        jobs = ", ".join(f"{n} {k}" for k, n in running.items()) or "idle"
        paused = " (paused)" if "*" in self.paused else ""
        return f"{len(self.state.config.targets)} targets, {jobs}{paused}"

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> int:
        """Start, loop until stopped; the process exit code."""
        try:
            try:
                self.start()
            except ConfigError as exc:
                log.error("configuration invalid", error=str(exc))
                return exc.exit_code
            except PgwardenError as exc:
                log.error("cannot start", error=str(exc))
                return exc.exit_code
            return self.loop()
        finally:
            self.close()

    def loop(self) -> int:
        assert self.scheduler is not None and self.state is not None
        interval = self.notifier.watchdog_interval
        next_ping = self.clock.monotonic()
        last_status = ""
        while not self.flags.stop:
            dead = self.dead_threads()
            if dead:
                self.fatal = f"infrastructure thread(s) died: {', '.join(dead)}"
                log.critical(
                    "fatal: a thread died, exiting so that systemd restarts pgwarden", threads=dead
                )
                self.notifier.status(self.fatal)
                return 1
            if self.flags.reload:
                self.flags.reload = False
                self.reload()
            self._fire_due()
            now_mono = self.clock.monotonic()
            if interval is not None and now_mono >= next_ping:
                self.notifier.watchdog()
                next_ping = now_mono + interval
            status = self._status_line()
            if status != last_status:
                self.notifier.status(status)
                last_status = status
            self._update_job_gauges()
            wait = self.scheduler.seconds_until_next(self.clock.now())
            sleep_for = min(TICK, wait if wait is not None else TICK)
            if interval is not None:
                sleep_for = min(sleep_for, max(0.0, next_ping - self.clock.monotonic()))
            self.clock.sleep(sleep_for, self.wake)
            self.wake.clear()
        log.info("stopping", signal=self.flags.signal_name or None)
        self.notifier.stopping()
        return self.shutdown()

    def _fire_due(self) -> None:
        assert self.scheduler is not None and self.runner is not None and self.state is not None
        for entry in self.scheduler.due(self.clock.now()):
            target = entry.key.target
            if "*" in self.paused or target in self.paused:
                log.info("schedule skipped: paused", target=target, kind=entry.key.kind)
                continue
            trigger = "catch-up" if entry.catch_up else "scheduled"
            self.submit(entry.key.kind, target, {}, trigger=trigger)

    def _update_job_gauges(self) -> None:
        assert self.runner is not None
        counts = self.runner.running_count()
        for kind in ("backup", "verify", "prune"):
            self.metrics.jobs_running.labels(kind).set(counts.get(kind, 0))

    def submit(self, kind: str, target: str, args: dict[str, Any], trigger: str = "manual") -> Job:
        assert self.runner is not None and self.state is not None
        config = self.state.config
        config.target(target)  # NotFoundError for an unknown target
        return self.runner.submit(Job(kind, target, config, args, trigger))

    def _after_job(self, job: Job) -> None:
        assert self.state is not None
        follow_ups = self.state.after_job(job)
        for kind, target, args in follow_ups:
            if self.flags.stop:
                break
            self.submit(kind, target, args, trigger=f"after-{job.kind}")
        self.wake.set()

    # -- reload ----------------------------------------------------------------------------
    def reload(self) -> bool:
        """Build the new config aside; swap it in only if valid.  True when applied."""
        assert self.state is not None and self.scheduler is not None and self.runner is not None
        self.notifier.reloading()
        try:
            new = config_mod.load(self.config_path)
            self.state.check_reloadable(new)
        except PgwardenError as exc:
            self.metrics.config_reloads.labels("failure").inc()
            self.metrics.config_last_reload_ok.set(0)
            log.error("reload rejected; the old configuration stays in force", error=str(exc))
            self.notifier.ready(self._status_line())
            return False
        old_targets = {t.name for t in self.state.config.targets}
        self.state.swap_config(new)
        logsetup.configure(new.daemon.log_level, new.daemon.log_format)
        self.scheduler.update(new, self.clock.now(), self._last_run)
        self.runner.set_max_parallel(new.daemon.max_parallel_jobs)
        for gone in old_targets - {t.name for t in new.targets}:
            self.metrics.forget_target(gone)
        for added in {t.name for t in new.targets} - old_targets:
            self.metrics.init_target(added)
        self.metrics.config_reloads.labels("success").inc()
        self.metrics.config_last_reload_ok.set(1)
        log.info("configuration reloaded", targets=[t.name for t in new.targets])
        self.notifier.ready(self._status_line())
        return True

    # -- shutdown --------------------------------------------------------------------------
    def shutdown(self) -> int:
        assert self.runner is not None and self.state is not None
        timeout = self.state.config.daemon.shutdown_timeout
        clean = self.runner.shutdown(timeout)
        if not clean:
            log.error("jobs did not stop in time")
        log.info("pgwarden stopped")
        return 0

    def close(self) -> None:
        for component in (self._control, self._monitor):
            if component is not None:
                component.stop()
        if self._metrics_server is not None:
            self._metrics_server.stop()
        if self.state is not None:
            self.state.close()
        self.notifier.close()
