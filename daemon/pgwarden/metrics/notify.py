"""The notification metric: ``pgwarden_notifications_total{destination,result}``.

``destination`` is a ``[[notify]]`` name (bounded by the config; never its URL, which is a
secret), ``result`` one of :data:`RESULTS`: ``sent`` (delivered, after retries if needed),
``failed`` (every try failed, or the destination could not even be resolved) or ``dropped``
(the delivery queue was full: the daemon never waits for a slow receiver).  Created on the
:class:`~pgwarden.metrics.registry.Metrics` registry as its ``notify`` attribute; counted by
:mod:`pgwarden.notify.dispatcher`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

RESULTS = ("sent", "failed", "dropped")


class NotifyMetrics:
    """The notification family, on the registry it is given."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.notifications = Counter(
            "pgwarden_notifications",
            "Notifications by destination ([[notify]] name) and result: sent, failed "
            "(every try failed) or dropped (the delivery queue was full)",
            ("destination", "result"),
            registry=registry,
        )

    def init(self, destination: str) -> None:
        """Create a destination's counters at 0, so that ``increase()`` sees the first one."""
        for result in RESULTS:
            self.notifications.labels(destination, result)

    def count(self, destination: str, result: str) -> None:
        self.notifications.labels(destination, result).inc()

    def forget(self, destination: str) -> None:
        """Drop a destination removed by a reload."""
        for result in RESULTS:
            try:
                self.notifications.remove(destination, result)
            except KeyError:
                continue
