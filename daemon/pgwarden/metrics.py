"""Prometheus metrics: the registry, every pgwarden metric, and the HTTP exposition.

One explicit :class:`CollectorRegistry` per :class:`Metrics` (tests build their own).  Names
follow Prometheus rules (prefix ``pgwarden_``, ``_seconds``, ``_bytes``, ``_total``,
``_timestamp_seconds``); labels are bounded (``target``, ``result``, ``state``, ``kind``...),
never a backup id or a time.  ``*_created`` series are disabled: they double the series count
and say nothing an operator uses.  A scrape never queries PostgreSQL: monitoring samples are
published by the monitor thread into a snapshot that a custom collector reads.

The HTTP server serves ``/metrics`` and ``/healthz`` (200 while the daemon's threads are alive,
503 otherwise) on the configured address only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, make_wsgi_app
from prometheus_client import disable_created_metrics as _disable_created

from pgwarden import __version__

_disable_created()

WsgiStart = Callable[[str, list[tuple[str, str]]], Any]


class Metrics:
    """Every metric pgwarden exports, on one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.build_info = Gauge(
            "pgwarden_build_info", "pgwarden version (always 1)", ["version"], registry=r
        )
        self.build_info.labels(__version__).set(1)
        self.start_time = Gauge(
            "pgwarden_start_time_seconds", "When the daemon started (Unix time)", registry=r
        )
        # -- backups -------------------------------------------------------------------
        self.backup_last_success = Gauge(
            "pgwarden_backup_last_success_timestamp_seconds",
            "Finish time of the newest complete backup", ["target"], registry=r,
        )  # fmt: skip
        self.backup_last_attempt = Gauge(
            "pgwarden_backup_last_attempt_timestamp_seconds",
            "Finish time of the newest backup run, whatever its outcome", ["target"], registry=r,
        )  # fmt: skip
        self.backup_last_ok = Gauge(
            "pgwarden_backup_last_run_success",
            "1 if the newest backup run succeeded, 0 if it failed", ["target"], registry=r,
        )  # fmt: skip
        self.backup_last_duration = Gauge(
            "pgwarden_backup_last_duration_seconds",
            "Duration of the newest complete backup", ["target"], registry=r,
        )  # fmt: skip
        self.backup_last_size = Gauge(
            "pgwarden_backup_last_size_bytes",
            "Size of the newest complete backup", ["target"], registry=r,
        )  # fmt: skip
        self.backup_runs = Counter(
            "pgwarden_backup_runs_total",
            "Backup runs by result (success, failure, cancelled)", ["target", "result"],
            registry=r,
        )  # fmt: skip
        self.backups = Gauge(
            "pgwarden_backups", "Backups in storage by state", ["target", "state"], registry=r
        )
        self.backup_oldest = Gauge(
            "pgwarden_backup_oldest_timestamp_seconds",
            "Start time of the oldest complete backup kept", ["target"], registry=r,
        )  # fmt: skip
        self.stored_bytes = Gauge(
            "pgwarden_backup_stored_bytes", "Bytes of backups kept", ["target"], registry=r
        )
        self.pg_dump_compatible = Gauge(
            "pgwarden_pg_dump_compatible",
            "1 if a pg_dump at least as new as the server was found, else 0", ["target"],
            registry=r,
        )  # fmt: skip
        self.space_ok = Gauge(
            "pgwarden_backup_space_sufficient",
            "0 if the last space check found too little room for the next backup",
            ["target"], registry=r,
        )  # fmt: skip
        self.storage_free = Gauge(
            "pgwarden_storage_free_bytes", "Free bytes where backups are stored", registry=r
        )
        # -- retention -----------------------------------------------------------------
        self.retention_deleted = Counter(
            "pgwarden_retention_deleted_total",
            "Backups deleted by retention", ["target"], registry=r,
        )  # fmt: skip
        # -- verification --------------------------------------------------------------
        self.verify_last_success = Gauge(
            "pgwarden_verify_last_success_timestamp_seconds",
            "Finish time of the newest passed restore drill", ["target"], registry=r,
        )  # fmt: skip
        self.verify_last_ok = Gauge(
            "pgwarden_verify_last_run_success",
            "1 if the newest restore drill passed, 0 if it failed", ["target"], registry=r,
        )  # fmt: skip
        self.verify_last_duration = Gauge(
            "pgwarden_verify_last_duration_seconds",
            "Duration of the newest restore drill", ["target"], registry=r,
        )  # fmt: skip
        self.verify_runs = Counter(
            "pgwarden_verify_runs_total",
            "Restore drills by result (success, failure, cancelled)", ["target", "result"],
            registry=r,
        )  # fmt: skip
        # -- daemon --------------------------------------------------------------------
        self.config_reloads = Counter(
            "pgwarden_config_reloads_total",
            "Configuration reloads by result (success, failure)", ["result"], registry=r,
        )  # fmt: skip
        self.config_last_reload_ok = Gauge(
            "pgwarden_config_last_reload_success",
            "1 if the last reload was applied, 0 if it was rejected", registry=r,
        )  # fmt: skip
        self.jobs_running = Gauge(
            "pgwarden_jobs_running", "Jobs running now by kind", ["kind"], registry=r
        )
        for kind in ("backup", "verify", "prune"):
            self.jobs_running.labels(kind).set(0)
        self.config_last_reload_ok.set(1)

    def forget_target(self, target: str) -> None:
        """Drop a removed target's series (after a reload)."""
        for metric in (self.backup_last_success, self.backup_last_attempt, self.backup_last_ok,
                       self.backup_last_duration, self.backup_last_size, self.backup_oldest,
                       self.stored_bytes, self.pg_dump_compatible, self.space_ok,
                       self.verify_last_success, self.verify_last_ok,
                       self.verify_last_duration):  # fmt: skip
            try:
                metric.remove(target)
            except KeyError:
                continue


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return


class MetricsServer:
    """``/metrics`` and ``/healthz`` on one address, in a named thread."""

    def __init__(
        self, metrics: Metrics, host: str, port: int, healthy: Callable[[], bool]
    ) -> None:
        self._metrics_app = make_wsgi_app(metrics.registry)
        self._healthy = healthy
        self._server = make_server(
            host, port, self._app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler
        )
        self.thread = threading.Thread(
            target=self._server.serve_forever, name="metrics-http", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def _app(self, environ: dict[str, Any], start_response: WsgiStart) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/healthz":
            ok = self._healthy()
            start_response(
                "200 OK" if ok else "503 Service Unavailable",
                [("Content-Type", "text/plain; charset=utf-8")],
            )
            return [b"ok\n" if ok else b"unhealthy\n"]
        if path in ("/metrics", "/metrics/"):
            result: Iterable[bytes] = self._metrics_app(environ, start_response)
            return result
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"pgwarden: see /metrics and /healthz\n"]

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
