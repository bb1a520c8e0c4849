"""The result of one ``pgwarden check`` item: a status and a one-line explanation.

Statuses: ``pass``; ``warn`` (advice, does not fail the command); ``fail`` (the command exits
1); ``unknown`` (could not be decided, with the reason; does not fail the command by itself).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

Status = Literal["pass", "warn", "fail", "unknown"]
STATUSES: tuple[Status, ...] = ("pass", "warn", "fail", "unknown")

#: check id -> the strategy's wording (Production Checklist, Vector Storage, Connection Pooling)
TITLES = {
    "credentials": "Credentials in environment variables (not code)",
    "backup.automation": "Backup automation configured",
    "backup.databases": "Whole-server databases (new, gone)",
    "backup.restore_tested": "Backup restore tested",
    "server.reachable": "Server reachable",
    "connections.pooling": "Connection pooling enabled (if needed)",
    "connections.limits": "Connection headroom",
    "connections.database_limit": "Connection limit of database",
    "connections.role_limit": "Connection limit of role",
    "monitoring.role": "Monitoring role can see all sessions",
    "indexes": "Indexes on frequently queried columns",
    "ssl": "SSL enabled for remote connections",
    "pgvector.extension": "pgvector extension",
    "pgvector.column": "pgvector column",
    "pg_dump": "pg_dump / pg_restore compatible with the server",
    "targets": "Targets configured",
    "storage": "Catalog and storage agree",
    "retention.last_prune": "Last prune",
    # off-site items name their destination as subject: "Newest off-site copy on b2: ..."
    "offsite.credentials": "Off-site credentials for",
    "offsite.reachable": "Off-site write test on",
    "offsite.versioning": "Bucket versioning of",
    "offsite.newest_copy": "Newest off-site copy on",
    "offsite.last_upload": "Last off-site upload to",
    "notify.delivery": "Notifications to",
}


@dataclass(frozen=True)
class CheckResult:
    """One checklist item for one target (``target`` None: the whole config)."""

    check: str
    status: Status
    detail: str
    target: str | None = None
    subject: str | None = None

    @property
    def title(self) -> str:
        return TITLES.get(self.check, self.check)

    def as_dict(self) -> dict[str, str | None]:
        return {**asdict(self), "title": self.title}


def worst(statuses: list[Status]) -> Status:
    """fail > warn > unknown > pass."""
    order: tuple[Status, ...] = ("fail", "warn", "unknown")
    return next((status for status in order if status in statuses), "pass")
