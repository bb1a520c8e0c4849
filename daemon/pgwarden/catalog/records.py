"""What catalog queries return: frozen, detached snapshots of rows.

Callers never hold ORM objects (no lazy loads across threads, no accidental writes): every
query copies rows into these dataclasses before its session closes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row

from pgwarden.catalog.models import Backup, Verification
from pgwarden.catalog.states import BackupStatus, DrillStatus


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _opt_utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def verdict(value: str | None) -> DrillStatus | None:
    """A ``verify_status`` column as a :class:`DrillStatus` (``None`` stays ``None``)."""
    return None if value is None else DrillStatus(value)


@dataclass(frozen=True)
class BackupRecord:
    """One backup attempt as recorded in the catalog."""

    id: str
    target: str
    database: str
    started_at: datetime
    finished_at: datetime | None
    status: BackupStatus
    tags: tuple[str, ...]
    format: str
    compression: str | None
    path: str | None
    size_bytes: int | None
    sha256: str | None
    pinned: bool
    verified_at: datetime | None
    verify_status: DrillStatus | None
    error: str | None
    attempt: int
    duration_s: float | None
    deleted_at: datetime | None

    @property
    def short_id(self) -> str:
        """The first 8 hex digits of the id, as used in backup names."""
        return self.id[:8]

    @classmethod
    def of(cls, row: Backup | Row[Any]) -> BackupRecord:
        """From an ORM row, or a plain row of every ``backups`` column."""
        return cls(
            id=row.id,
            target=row.target,
            database=row.database,
            started_at=_utc(row.started_at),
            finished_at=_opt_utc(row.finished_at),
            status=BackupStatus(row.status),
            tags=tuple(row.tags or ()),
            format=row.format,
            compression=row.compression,
            path=row.path,
            size_bytes=row.size_bytes,
            sha256=row.sha256,
            pinned=bool(row.pinned),
            verified_at=_opt_utc(row.verified_at),
            verify_status=verdict(row.verify_status),
            error=row.error,
            attempt=row.attempt,
            duration_s=row.duration_s,
            deleted_at=_opt_utc(row.deleted_at),
        )


@dataclass(frozen=True)
class VerificationRecord:
    """One restore drill as recorded in the catalog."""

    id: int
    backup_id: str
    started_at: datetime
    finished_at: datetime | None
    status: DrillStatus
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @classmethod
    def of(cls, row: Verification) -> VerificationRecord:
        return cls(
            id=row.id,
            backup_id=row.backup_id,
            started_at=_utc(row.started_at),
            finished_at=_opt_utc(row.finished_at),
            status=DrillStatus(row.status),
            details=dict(row.details or {}),
            error=row.error,
        )


@dataclass(frozen=True)
class TargetSummary:
    """Per-target history used to restore Prometheus gauges at start-up.

    ``last_success_*`` describe the newest complete backup (deleted ones included: it still
    succeeded), ``last_attempt_*`` the newest attempt of any outcome, ``last_verification_*``
    the newest finished drill.
    """

    target: str
    last_attempt_at: datetime | None = None
    last_attempt_status: BackupStatus | None = None
    last_success_at: datetime | None = None
    last_success_size_bytes: int | None = None
    last_success_duration_s: float | None = None
    last_verification_at: datetime | None = None
    last_verification_status: DrillStatus | None = None
    complete_count: int = 0
    complete_bytes: int = 0
    failed_count: int = 0
