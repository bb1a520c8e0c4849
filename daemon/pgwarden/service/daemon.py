"""``pgwarden run``: the daemon's main thread — start-up, the main loop, reload and shutdown.

Start-up: validate the config, claim the control socket, open the catalog (Alembic upgrade),
rebuild it from the manifests if it was lost (:mod:`.lostcatalog`, which also watches for a
catalog file deleted while running), recover from a crash
(:mod:`.recovery`), start the threads (job pool, monitor, metrics HTTP,
control socket), then ``READY=1``.

Main loop: fire due schedules into the job pool, ping the watchdog only while every thread is
alive, apply a requested reload (``SIGHUP`` or ``ctl reload``; ``[monitor] enabled`` changed
by a reload starts or stops the monitor thread; the metrics TLS certificate and basic-auth
users are reloaded in place, a file that cannot be loaded rejecting the reload).  Signal
handlers only set flags and wake the loop.  A dead infrastructure thread is fatal: exit 1 and
let systemd restart us.
``SIGTERM``/``SIGINT``: ``STOPPING=1``, no new jobs, running ones get ``shutdown_timeout`` then
are aborted; exit 0.

What the daemon does (jobs, schedules, pauses, reload decisions) is
:class:`~pgwarden.service.core.Service`; this module is the process around it.
"""

from __future__ import annotations

import gc
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from pgwarden import config as config_mod
from pgwarden import logsetup
from pgwarden.config import Config
from pgwarden.control.server import ControlServer
from pgwarden.errors import ConfigError, PgwardenError
from pgwarden.metrics import ListenerSettings, Metrics, MetricsServer
from pgwarden.monitor.thread import MonitorThread
from pgwarden.notify import Dispatcher
from pgwarden.notify.status import status_path
from pgwarden.service import jobkinds, notifications, recovery
from pgwarden.service.api import ServiceApi
from pgwarden.service.clock import Clock, SystemClock
from pgwarden.service.core import Service
from pgwarden.service.lostcatalog import CatalogWatch, rebuild_lost_catalog
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
        self.api = ServiceApi()  # what the control socket is given; attached once started
        self.service: Service | None = None
        self._state: ServiceState | None = None
        self.fatal: str | None = None
        self._threads: dict[str, threading.Thread] = {}
        self._metrics_server: MetricsServer | None = None
        self._next_listener: ListenerSettings | None = None  # built by a reload's _prepare
        self._control: ControlServer | None = None
        self._monitor: MonitorThread | None = None
        self._catalog_watch: CatalogWatch | None = None
        self._notify: Dispatcher | None = None
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
        # claim the control socket first: a second daemon on the same config must refuse
        # before its crash recovery could disturb the first one's running jobs
        self._control = ControlServer(self.api, config.daemon)
        self._control.claim()
        self._state = state = ServiceState.open(config, self.metrics)
        rebuild_lost_catalog(state)  # before recovery restores the gauges from it
        self._catalog_watch = CatalogWatch(state, config.daemon.effective_catalog_url)
        recovery.recover(state)
        state.notify = self._notify = Dispatcher(
            config.notify, self.metrics.notify, status_path(config.daemon.state_dir)
        )
        service = Service(
            self.config_path,
            state,
            notifications.with_start_events(jobkinds.job_functions(state), state),
            jobkinds.follow_ups,
            clock=self.clock,
            wake=self.wake,
        )
        self.service = service
        self.metrics.start_time.set(service.started_at.timestamp())
        self.api.attach(service)
        service.runner.start()
        self._notify.start()
        self._threads["notify"] = self._notify.thread
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
        if self.install_signals:  # the daemon owns its process (tests run it in theirs)
            _freeze_start_up_heap()
        self.notifier.ready(service.status_line())
        notifications.daemon_event(self._notify, "daemon.start")
        self.started.set()
        return config

    def _start_infrastructure(self, config: Config) -> None:
        assert self._control is not None
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
        self._sync_monitor(config)
        self._control.start()
        self._threads["control"] = self._control.thread

    def _sync_monitor(self, config: Config) -> tuple[str, ...]:
        """Run the monitor thread exactly when ``[monitor] enabled`` says so.

        At start-up and on every reload: a reload that enables the monitor starts its thread,
        one that disables it stops the thread (it is then no longer watched, so its end is not
        fatal).  The notes say what changed, for the reload's answer and the log.
        """
        if config.monitor.enabled and self._monitor is None:
            assert self.service is not None
            state = self.service.state
            self._monitor = MonitorThread(lambda: state.config, self.metrics)
            self._monitor.start()
            self._threads["monitor"] = self._monitor.thread
            return ("monitor started",)
        if not config.monitor.enabled and self._monitor is not None:
            monitor, self._monitor = self._monitor, None
            del self._threads["monitor"]
            monitor.stop(timeout=0)  # a cycle in progress ends by itself, bounded by timeouts
            return ("monitor stopped",)
        return ()

    # -- health ----------------------------------------------------------------------------
    def dead_threads(self) -> list[str]:
        dead = [name for name, thread in self._threads.items() if not thread.is_alive()]
        if self.service is not None and not self.service.runner.alive():
            dead.append("job-pool")
        return dead

    def healthy(self) -> bool:
        return self.fatal is None and not self.dead_threads()

    def _status_line(self) -> str:
        return self.service.status_line() if self.service is not None else "starting"

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
        service = self.service
        assert service is not None
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
            if self.flags.reload or service.reloads.pending():
                self.flags.reload = False
                self.reload()
            if self._catalog_watch is not None:
                self._catalog_watch.check(service.state)
            service.fire_due()
            now_mono = self.clock.monotonic()
            if interval is not None and now_mono >= next_ping:
                self.notifier.watchdog()
                next_ping = now_mono + interval
            status = service.status_line()
            if status != last_status:
                self.notifier.status(status)
                last_status = status
            service.update_job_gauges()
            wait = service.scheduler.seconds_until_next(self.clock.now())
            sleep_for = min(TICK, wait if wait is not None else TICK)
            if interval is not None:
                sleep_for = min(sleep_for, max(0.0, next_ping - self.clock.monotonic()))
            self.clock.sleep(sleep_for, self.wake)
            self.wake.clear()
        log.info("stopping", signal=self.flags.signal_name or None)
        self.notifier.stopping()
        return self.shutdown()

    # -- reload ----------------------------------------------------------------------------
    def reload(self) -> bool:
        """Apply the config file now (main loop only), answering every pending ``ctl reload``.
        True when the new config was applied."""
        assert self.service is not None
        self.notifier.reloading()
        result = self.service.serve_reloads(self._adopt, self._prepare)
        self.notifier.ready(self._status_line())
        return result.applied

    def _prepare(self, _old: Config, new: Config) -> None:
        """Load the new metrics TLS certificate and basic-auth users before the swap: a file
        that cannot be loaded rejects the reload, and the listener keeps its settings."""
        self._next_listener = None
        if self._metrics_server is not None:
            self._next_listener = ListenerSettings.from_config(new)

    def _adopt(self, old: Config, new: Config) -> tuple[str, ...]:
        logsetup.configure(new.daemon.log_level, new.daemon.log_format)
        if self._notify is not None:
            self._notify.configure(new.notify)
        notes = self._sync_monitor(new)
        for note in notes:
            log.info(note, reason="[monitor] enabled changed by a reload")
        if self._metrics_server is not None and self._next_listener is not None:
            # always applied: a reload re-reads a renewed certificate under the same path
            self._metrics_server.apply(self._next_listener)
            self._next_listener = None
            if _listener_keys(old) != _listener_keys(new):
                log.info("metrics listener: new TLS and basic-auth settings in force")
                notes += ("metrics TLS and basic auth updated",)
        return notes

    # -- shutdown --------------------------------------------------------------------------
    def shutdown(self) -> int:
        assert self.service is not None
        if not self.service.shutdown():
            log.error("jobs did not stop in time")
        notifications.daemon_event(self._notify, "daemon.stop")
        log.info("pgwarden stopped")
        return 0

    def close(self) -> None:
        if self._control is not None:
            self._control.stop()
        if self._monitor is not None:
            self._monitor.stop()
        if self._metrics_server is not None:
            self._metrics_server.stop()
        if self._notify is not None:
            self._notify.close()  # a short flush: a silent receiver never holds up the stop
        if self._state is not None:
            self._state.close()
        self.notifier.close()


def _freeze_start_up_heap() -> None:
    """Hide what start-up allocated (modules, SQLAlchemy's mappers, the config) from the cyclic
    garbage collector: a full collection walked all of it, 25-120 ms holding the GIL while
    backups ran (every thread paused, ``/metrics`` answers included; ``benchmarks/scale.py
    metrics``).  Those objects live as long as the process; they are still freed by reference
    counting if they go."""
    gc.collect()
    gc.freeze()


def _listener_keys(config: Config) -> tuple[object, ...]:
    m = config.metrics
    users = {user: h.reveal() for user, h in m.auth_users().items()}
    return (m.tls_cert_file, m.tls_key_file, users)
