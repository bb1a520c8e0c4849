"""The catalog's record of off-site copies: which backup is confirmed on which destination.

A copy is ``confirmed`` only when its object and its manifest are both in the bucket (the
manifest is uploaded last); ``failed`` keeps the last error (already redacted) so the next run
retries it; ``deleted`` when remote retention removed it.  The bucket holds the truth:
``catalog rebuild`` recreates confirmed rows from the remote manifests.

One row per (backup, destination) in ``offsite_copies``; :func:`record_copy` creates or
updates it, :func:`copies` lists them and :func:`pending_backups` answers the upload's
question: which complete local backups of a target are not confirmed on a destination yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select

from pgwarden.catalog.lookup import backup_row
from pgwarden.catalog.models import Backup, OffsiteCopy
from pgwarden.catalog.queries import Catalog
from pgwarden.catalog.records import BackupRecord
from pgwarden.catalog.states import BackupStatus, CopyState

__all__ = [
    "CopyState",
    "OffsiteCopyRecord",
    "copies",
    "mark_interrupted",
    "pending_backups",
    "record_copy",
]


def _opt_utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


@dataclass(frozen=True)
class OffsiteCopyRecord:
    backup_id: str
    target: str
    destination: str
    key: str
    state: CopyState
    size_bytes: int | None
    object_sha256: str | None
    encrypted: bool
    uploaded_at: datetime | None
    attempts: int
    error: str | None
    updated_at: datetime | None = None
    backup_started_at: datetime | None = None

    @classmethod
    def of(cls, row: OffsiteCopy, backup: Backup) -> OffsiteCopyRecord:
        return cls(
            backup_id=row.backup_id,
            target=backup.target,
            destination=row.destination,
            key=row.key,
            state=CopyState(row.state),
            size_bytes=row.size_bytes,
            object_sha256=row.object_sha256,
            encrypted=bool(row.encrypted),
            uploaded_at=_opt_utc(row.uploaded_at),
            attempts=row.attempts,
            error=row.error,
            updated_at=_opt_utc(row.updated_at),
            backup_started_at=_opt_utc(backup.started_at),
        )


def _check_aware(value: datetime | None, name: str) -> None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise ValueError(f"{name} must be timezone-aware (got {value!r})")


def record_copy(
    catalog: Catalog,
    *,
    backup_id: str,
    destination: str,
    key: str,
    state: CopyState,
    size_bytes: int | None = None,
    object_sha256: str | None = None,
    encrypted: bool = False,
    uploaded_at: datetime | None = None,
    error: str | None = None,
) -> OffsiteCopyRecord:
    """Create or update the row for (backup, destination); ``attempts`` counts UPLOADING.

    ``error`` must already be redacted; it is cleared by any state but ``failed``.  Size,
    checksum and upload time are kept from an earlier write when not given again.
    """
    state = CopyState(state)
    _check_aware(uploaded_at, "uploaded_at")
    if not destination:
        raise ValueError("destination must not be empty")
    now = datetime.now(UTC)
    with catalog._session(write=True) as session:
        backup = backup_row(session, backup_id)
        row = session.scalars(
            select(OffsiteCopy).where(
                OffsiteCopy.backup_id == backup.id, OffsiteCopy.destination == destination
            )
        ).one_or_none()
        if row is None:
            row = OffsiteCopy(backup_id=backup.id, destination=destination, attempts=0)
            session.add(row)
        row.key, row.state, row.encrypted, row.updated_at = key, state, encrypted, now
        row.error = error if state == CopyState.FAILED else None
        if state == CopyState.UPLOADING:
            row.attempts = (row.attempts or 0) + 1
        for name, value in (
            ("size_bytes", size_bytes),
            ("object_sha256", object_sha256),
            ("uploaded_at", uploaded_at),
        ):
            if value is not None:
                setattr(row, name, value)
        session.flush()
        return OffsiteCopyRecord.of(row, backup)


def copies(
    catalog: Catalog,
    *,
    target: str | None = None,
    destination: str | None = None,
    states: tuple[CopyState, ...] | None = None,
) -> list[OffsiteCopyRecord]:
    """Every recorded copy (deleted ones included unless ``states`` says), oldest backup first."""
    query = (
        select(OffsiteCopy, Backup)
        .join(Backup, OffsiteCopy.backup_id == Backup.id)
        .order_by(Backup.started_at, Backup.id, OffsiteCopy.destination)
    )
    if target is not None:
        query = query.where(Backup.target == target)
    if destination is not None:
        query = query.where(OffsiteCopy.destination == destination)
    if states is not None:
        query = query.where(OffsiteCopy.state.in_([str(s) for s in states]))
    with catalog._session(write=False) as session:
        return [OffsiteCopyRecord.of(row, backup) for row, backup in session.execute(query)]


def pending_backups(catalog: Catalog, *, target: str, destination: str) -> list[BackupRecord]:
    """Complete local backups of ``target`` not confirmed on ``destination``, newest first.

    A copy remote retention deleted (``deleted``) is not pending: it was there and the remote
    policy removed it; uploading it again would undo that.
    """
    done = select(OffsiteCopy.backup_id).where(
        OffsiteCopy.destination == destination,
        OffsiteCopy.state.in_([str(CopyState.CONFIRMED), str(CopyState.DELETED)]),
    )
    query = (
        select(Backup)
        .where(
            Backup.target == target,
            Backup.status == BackupStatus.COMPLETE,
            Backup.id.not_in(done),
        )
        .order_by(Backup.started_at.desc(), Backup.id.desc())
    )
    with catalog._session(write=False) as session:
        return [BackupRecord.of(row) for row in session.scalars(query)]


def mark_interrupted(catalog: Catalog, *, target: str, error: str) -> int:
    """Mark ``target``'s copies still ``uploading`` as ``failed`` with ``error``; how many.

    Only for a caller that holds the target's off-site run lock: no upload of it is alive, so
    such a row was left by a process that died."""
    now = datetime.now(UTC)
    query = (
        select(OffsiteCopy)
        .join(Backup, OffsiteCopy.backup_id == Backup.id)
        .where(Backup.target == target, OffsiteCopy.state == str(CopyState.UPLOADING))
    )
    with catalog._session(write=True) as session:
        rows = session.scalars(query).all()
        for row in rows:
            row.state, row.error, row.updated_at = CopyState.FAILED, error, now
        return len(rows)
