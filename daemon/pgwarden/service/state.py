"""What the daemon holds between jobs: the config in force, the catalog, the storage, metrics.

The config is one reference swapped on reload; each job keeps the snapshot it started with.
This module also wires job kinds to the functions that do the work (``backup``, ``verify``,
``prune``) and decides the follow-ups of a finished job (prune after a successful backup,
verify right after it when ``after_backup`` is set), and it owns crash recovery at start-up.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pgwarden import logsetup
from pgwarden.catalog import Catalog, open_catalog
from pgwarden.config import Config, TargetConfig
from pgwarden.errors import ConfigError
from pgwarden.metrics import Metrics
from pgwarden.service import outcomes
from pgwarden.service.jobs import Job, JobFunction
from pgwarden.storage import LocalStorage, Storage

if TYPE_CHECKING:
    from pgwarden.service.daemon import Daemon

log = logsetup.get_logger("pgwarden.state")

#: settings that are bound at start-up; changing them needs a restart, not a reload
RESTART_ONLY = (
    ("daemon", "state_dir"),
    ("daemon", "catalog_url"),
    ("daemon", "socket"),
    ("metrics", "listen"),
    ("metrics", "enabled"),
    ("storage", "path"),
)


#: what the start-up checks, the jobs and the monitor import when they first run
BACKGROUND_MODULES = (
    "pgwarden.service.jobkinds",
    "pgwarden.restore.outcome",
    "pgwarden.restore.drill",
    "pgwarden.storage.locks",
    "pgwarden.retention.prune",
    "pgwarden.monitor.thread",
)


def import_background_modules() -> None:
    """Import, on the calling (main) thread, every module a background thread would import
    lazily.  Two threads importing overlapping modules at once can deadlock in Python's import
    locks (``_DeadlockError``: seen as a daemon that exits at start-up): the start-up checks'
    thread and the main thread both pulled in ``pgwarden.pg`` here."""
    for name in BACKGROUND_MODULES:
        importlib.import_module(name)


@dataclass
class ServiceState:
    config: Config
    catalog: Catalog
    storage: Storage
    metrics: Metrics
    _lock: threading.Lock

    @classmethod
    def open(cls, config: Config, metrics: Metrics) -> ServiceState:
        state_dir = config.daemon.state_dir
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        catalog = open_catalog(config.daemon.effective_catalog_url)
        storage = LocalStorage(config.storage.path)
        return cls(config, catalog, storage, metrics, threading.Lock())

    def swap_config(self, new: Config) -> None:
        with self._lock:
            self.config = new

    def check_reloadable(self, new: Config) -> None:
        problems = []
        for section, key in RESTART_ONLY:
            if getattr(getattr(self.config, section), key) != getattr(getattr(new, section), key):
                problems.append(f"{section}.{key}: changing it needs a restart, not a reload")
        if problems:
            raise ConfigError(new.source, problems)

    # -- start-up recovery -------------------------------------------------------------
    def recover(self) -> None:
        removed = self.storage.cleanup_partials()
        for path in removed:
            log.warning("removed a partial file left by an interrupted run", path=str(path))
        interrupted = self.catalog.mark_running_interrupted()
        if interrupted:
            log.warning("runs interrupted by the previous stop", count=interrupted)
        outcomes.restore_gauges(self)
        import_background_modules()
        # server checks may wait on a connect timeout: they must not delay READY=1
        threading.Thread(target=self.check_servers, name="startup-checks", daemon=True).start()

    def check_servers(self) -> None:
        """Once at start-up, per target: drop scratch databases a crashed drill left behind,
        and check that a usable pg_dump exists — so an operator learns of a missing
        postgresql-client-N at noon (log, metric, ``pgwarden check``), not at 3 AM."""
        from pgwarden.restore.drill import drop_leftover_scratch_databases

        for target in self.config.targets:
            try:
                for name in drop_leftover_scratch_databases(target):
                    log.warning("dropped a scratch database left by a crash", database=name)
                self.metrics.pg_dump_compatible.labels(target.name).set(
                    1 if pg_dump_usable(target) else 0
                )
            except Exception as exc:  # noqa: BLE001 - a server down at start-up is not fatal
                log.warning(
                    "cannot check the server at start-up",
                    target=target.name,
                    error=logsetup.scrub(str(exc)),
                )

    def last_run(self, target: str, kind: str) -> datetime | None:
        return self.catalog.last_run(target, kind)

    # -- jobs ------------------------------------------------------------------------------
    def job_functions(self) -> dict[str, JobFunction]:
        from pgwarden.service import jobkinds as backup_jobs

        def bind(fn: Callable[[Job, ServiceState], dict[str, Any]]) -> JobFunction:
            return lambda job: fn(job, self)

        return {
            "backup": bind(backup_jobs.backup_job),
            "verify": bind(backup_jobs.verify_job),
            "prune": bind(backup_jobs.prune_job),
        }

    def after_job(self, job: Job) -> list[tuple[str, str, dict[str, Any]]]:
        outcomes.record_job(self, job)
        follow: list[tuple[str, str, dict[str, Any]]] = []
        if job.kind == "backup" and job.state == "succeeded":
            target = self._target_or_none(job.target)
            if target is not None:
                if target.verify.enabled and target.verify.after_backup:
                    follow.append(("verify", target.name, {"backup": job.result.get("backup_id")}))
                follow.append(("prune", target.name, {}))
        return follow

    def _target_or_none(self, name: str) -> TargetConfig | None:
        for target in self.config.targets:
            if target.name == name:
                return target
        return None

    # -- threads ---------------------------------------------------------------------------
    def start_monitor(self, daemon: Daemon) -> Any:
        if not self.config.monitor.enabled:
            return None
        from pgwarden.monitor.thread import MonitorThread

        monitor = MonitorThread(lambda: self.config, self.metrics)
        monitor.start()
        return monitor

    def close(self) -> None:
        self.catalog.close()


def pg_dump_usable(target: TargetConfig) -> bool:
    """Whether a pg_dump at least as new as ``target``'s server is installed (logs why not)."""
    from pgwarden.errors import IncompatibleToolError
    from pgwarden.pg.binaries import find_tool
    from pgwarden.pg.conninfo import ConnSpec
    from pgwarden.pg.server import server_major, server_version

    with ConnSpec.from_target(target).connect(application_name="pgwarden") as conn:
        major, version = server_major(conn), server_version(conn)
    try:
        find_tool("pg_dump", min_major=major, bin_dir=target.bin_dir, server_version=version)
    except IncompatibleToolError as exc:
        log.error("backups of this target will fail", target=target.name, error=str(exc))
        return False
    return True
