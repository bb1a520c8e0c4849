"""Prometheus metrics: :mod:`.registry` holds every metric in an explicit registry,
:mod:`.http` serves it (``/metrics``, ``/healthz``; TLS and basic auth)."""

from pgwarden.metrics.http import ListenerSettings, MetricsServer
from pgwarden.metrics.registry import BACKUP_STATES, RUN_RESULTS, Metrics

__all__ = ["BACKUP_STATES", "RUN_RESULTS", "ListenerSettings", "Metrics", "MetricsServer"]
