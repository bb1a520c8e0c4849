"""Prometheus metrics: the registry and every pgwarden metric.

One explicit :class:`CollectorRegistry` per :class:`Metrics` (tests build their own).  Names
follow Prometheus rules (prefix ``pgwarden_``, ``_seconds``, ``_bytes``, ``_total``,
``_timestamp_seconds``); labels are bounded (``target``, ``result``, ``state``, ``kind``...),
never a backup id or a time.  ``*_created`` series are disabled: they double the series count
and say nothing an operator uses.  A scrape never queries PostgreSQL: monitoring samples are
published by the monitor thread into a snapshot that a custom collector reads, and job outcomes
are written here by :mod:`pgwarden.service.outcomes`.
The HTTP listener lives in :mod:`pgwarden.metrics.http`.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client import disable_created_metrics as _disable_created

from pgwarden import __version__
from pgwarden.config.kinds import JobKind
from pgwarden.metrics.notify import NotifyMetrics
from pgwarden.metrics.offsite import OffsiteMetrics

_disable_created()  # type: ignore[no-untyped-call]

RUN_RESULTS = ("success", "failure", "cancelled")
BACKUP_STATES = ("complete", "failed")
#: the ``kind`` label of ``pgwarden_jobs_stalled_total``: the jobs that have a stall_timeout
STALL_KINDS = ("backup", "verify")


class Metrics:
    """Every metric pgwarden exports, on one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        # the order of definition is the order of the exposition
        self._define_backup_metrics()
        self._define_verify_and_daemon_metrics()
        #: ``pgwarden_offsite_*{target,destination}`` (:mod:`pgwarden.metrics.offsite`)
        self.offsite = OffsiteMetrics(self.registry)
        #: ``pgwarden_notifications_total{destination,result}`` (:mod:`pgwarden.metrics.notify`)
        self.notify = NotifyMetrics(self.registry)

    def _gauge(self, name: str, doc: str, labels: Iterable[str] = ()) -> Gauge:
        return Gauge(f"pgwarden_{name}", doc, list(labels), registry=self.registry)

    def _counter(self, name: str, doc: str, labels: Iterable[str] = ()) -> Counter:
        return Counter(f"pgwarden_{name}", doc, list(labels), registry=self.registry)

    def _define_backup_metrics(self) -> None:
        gauge, counter = self._gauge, self._counter
        t, tr = ("target",), ("target", "result")
        self.build_info = gauge("build_info", "pgwarden version (always 1)", ["version"])
        self.build_info.labels(__version__).set(1)
        self.start_time = gauge("start_time_seconds", "When the daemon started (Unix time)")
        # -- backups -------------------------------------------------------------------
        self.backup_last_success = gauge(
            "backup_last_success_timestamp_seconds", "Finish time of the newest complete backup", t
        )
        self.backup_last_attempt = gauge(
            "backup_last_attempt_timestamp_seconds",
            "Finish time of the newest backup run, any outcome",
            t,
        )
        self.backup_last_ok = gauge(
            "backup_last_run_success", "1 if the newest backup run succeeded, 0 if it failed", t
        )
        self.backup_last_duration = gauge(
            "backup_last_duration_seconds", "Duration of the newest complete backup", t
        )
        self.backup_last_size = gauge(
            "backup_last_size_bytes", "Size of the newest complete backup", t
        )
        #: a whole-server target's databases; their own series carry target="<target>/<db>"
        self.server_database = gauge(
            "server_database_present",
            "A whole-server target's database: 1 selected at the last run, 0 gone (backups kept)",
            ("target", "database"),
        )
        self.backup_runs = counter(
            "backup_runs", "Backup runs by result (success, failure, cancelled)", tr
        )
        self.backups = gauge(
            "backups", "Backups in the catalog by state (complete: kept)", ("target", "state")
        )
        self.backup_oldest = gauge(
            "backup_oldest_timestamp_seconds", "Start time of the oldest complete backup kept", t
        )
        self.stored_bytes = gauge("backup_stored_bytes", "Bytes of backups kept", t)
        self.pg_dump_compatible = gauge(
            "pg_dump_compatible", "1 if a pg_dump at least as new as the server was found", t
        )
        self.space_ok = gauge(
            "backup_space_sufficient",
            "0 if the last space check found too little room for a backup",
            t,
        )
        self.storage_free = gauge("storage_free_bytes", "Free bytes where backups are stored")

    def _define_verify_and_daemon_metrics(self) -> None:
        gauge, counter = self._gauge, self._counter
        t, tr = ("target",), ("target", "result")
        # -- retention -----------------------------------------------------------------
        self.retention_deleted = counter("retention_deleted", "Backups deleted by retention", t)
        self.prune_runs = counter(
            "prune_runs", "Prunes by result (success, failure, cancelled); dry runs excluded", tr
        )
        self.prune_last_ok = gauge(
            "prune_last_run_success",
            "1 if the newest prune deleted all it planned to, 0 if a deletion failed",
            t,
        )
        # -- verification --------------------------------------------------------------
        self.verify_last_success = gauge(
            "verify_last_success_timestamp_seconds",
            "Finish time of the newest passed restore drill",
            t,
        )
        self.verify_last_ok = gauge(
            "verify_last_run_success", "1 if the newest restore drill passed, 0 if it failed", t
        )
        self.verify_last_duration = gauge(
            "verify_last_duration_seconds", "Duration of the newest restore drill", t
        )
        self.verify_runs = counter(
            "verify_runs", "Restore drills by result (success, failure, cancelled)", tr
        )
        self.jobs_stalled = counter(
            "jobs_stalled",
            "Backups and drills cancelled for making no progress for their stall_timeout",
            ("target", "kind"),
        )
        # -- daemon --------------------------------------------------------------------
        self.config_reloads = counter(
            "config_reloads", "Configuration reloads by result (success, failure)", ["result"]
        )
        self.config_last_reload_ok = gauge(
            "config_last_reload_success", "1 if the last reload was applied, 0 if rejected"
        )
        self.jobs_running = gauge("jobs_running", "Jobs running now by kind", ["kind"])
        for kind in JobKind:
            self.jobs_running.labels(kind).set(0)
        for result in ("success", "failure"):
            self.config_reloads.labels(result)
        self.config_last_reload_ok.set(1)

    def init_target(self, target: str) -> None:
        """Create a target's counters at 0, so that ``rate()`` and ``increase()`` see the
        first run, and its ``pgwarden_backups`` states."""
        for result in RUN_RESULTS:
            self.backup_runs.labels(target, result)
            self.verify_runs.labels(target, result)
            self.prune_runs.labels(target, result)
        self.retention_deleted.labels(target)
        for kind in STALL_KINDS:
            self.jobs_stalled.labels(target, kind)

    def forget_target(self, target: str) -> None:
        """Drop a removed target's series (after a reload)."""
        for metric in (
            self.backup_last_success,
            self.backup_last_attempt,
            self.backup_last_ok,
            self.backup_last_duration,
            self.backup_last_size,
            self.backup_oldest,
            self.stored_bytes,
            self.pg_dump_compatible,
            self.space_ok,
            self.verify_last_success,
            self.verify_last_ok,
            self.verify_last_duration,
            self.retention_deleted,
            self.prune_last_ok,
        ):
            _remove(metric, target)
        for result in RUN_RESULTS:
            _remove(self.backup_runs, target, result)
            _remove(self.verify_runs, target, result)
            _remove(self.prune_runs, target, result)
        for kind in STALL_KINDS:
            _remove(self.jobs_stalled, target, kind)
        for state in BACKUP_STATES:
            _remove(self.backups, target, state)
        self.offsite.forget(target)


def _remove(metric: Gauge | Counter, *labels: str) -> None:
    try:
        metric.remove(*labels)
    except KeyError:
        return
