"""The fact a notification carries: :class:`Event`, typed and already redacted.

``event`` is one of :data:`~pgwarden.config.notify.NOTIFY_EVENTS`; ``run_id`` (a UUID) ties a
job's ``backup.start`` to its end, so a healthchecks check measures the run's duration (its
``rid``).  ``error`` is redacted and bounded when the event is built, whoever builds it.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pgwarden.redaction import redact

#: the longest error text an event carries (a pg_dump stderr tail can be long)
MAX_ERROR = 2000


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Event:
    """One thing that happened, as every destination kind sees it."""

    event: str
    target: str | None = None
    database: str | None = None
    backup_id: str | None = None
    size_bytes: int | None = None
    duration_s: float | None = None
    error: str | None = None
    message: str = ""
    run_id: str | None = None
    job_id: str | None = None
    host: str = field(default_factory=socket.gethostname)
    time: datetime = field(default_factory=_now)

    def __post_init__(self) -> None:
        if self.error is not None:
            error = redact(self.error)
            if len(error) > MAX_ERROR:
                error = error[: MAX_ERROR - 3] + "..."
            object.__setattr__(self, "error", error)  # frozen: set once, at construction

    @property
    def failed(self) -> bool:
        return self.event.endswith(".failure") or self.event == "stalled"

    @property
    def started(self) -> bool:
        return self.event.endswith(".start") and self.event != "daemon.start"
