"""The catalog's queries: recording backup attempts and drills, listing and summarising them.

:class:`Catalog` wraps one engine; each method runs in its own short session and returns
frozen records (:mod:`pgwarden.catalog.records`), so one ``Catalog`` is shared by every thread
of the daemon.  Database failures surface as :class:`CatalogError`; a backup that cannot be
found as :class:`NotFoundError`; an ambiguous id prefix as :class:`UsageError`.  Resolving a
backup reference is :mod:`~pgwarden.catalog.lookup`'s; changing drill rows
:mod:`~pgwarden.catalog.drills`'.

Datetimes given to the catalog must be timezone-aware; the ones it returns are aware UTC.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from pgwarden.catalog.drills import finish_drill, start_drill
from pgwarden.catalog.lookup import backup_row
from pgwarden.catalog.manifest_facts import BACKUP_ID_RE, read_manifest_facts
from pgwarden.catalog.models import Backup, Verification
from pgwarden.catalog.rebuild import apply_manifest_facts
from pgwarden.catalog.records import BackupRecord, TargetSummary, VerificationRecord
from pgwarden.catalog.states import (
    BACKUP_STATUSES,
    DRILL_ENDINGS,
    FINISH_STATUSES,
    BackupStatus,
    DrillStatus,
)
from pgwarden.catalog.summary import summarise
from pgwarden.errors import CatalogError, UsageError, describe

#: execution option that makes SQLite start the transaction with BEGIN IMMEDIATE
WRITE_OPTION = "pgwarden_write"
INTERRUPTED_MESSAGE = "interrupted: pgwarden stopped before this finished"


def _now() -> datetime:
    return datetime.now(UTC)


def _as_utc(value: datetime | str | None) -> datetime | None:
    """An aggregate's timestamp: SQLite returns ``max()`` of a column as naive text (UTC)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _check_aware(value: datetime | None, name: str) -> None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise ValueError(f"{name} must be timezone-aware (got {value!r})")


class Catalog:
    """The run history of one pgwarden installation (see the module docstring)."""

    def __init__(self, engine: Engine, where: str) -> None:
        self.engine = engine
        self.where = where
        self._write_engine = engine.execution_options(**{WRITE_OPTION: True})

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Catalog({self.where!r})"

    @contextmanager
    def _session(self, *, write: bool) -> Iterator[Session]:
        try:
            engine = self._write_engine if write else self.engine
            with Session(engine, expire_on_commit=False) as session, session.begin():
                yield session
        except SQLAlchemyError as exc:
            raise CatalogError(f"catalog at {self.where}: {describe(exc)}") from exc

    # -- backups ----------------------------------------------------------------------------

    def record_backup_start(
        self,
        backup_id: str,
        *,
        target: str,
        database: str,
        started_at: datetime,
        format: str,
        compression: str | None = None,
        tags: Iterable[str] = (),
        attempt: int = 1,
        path: str | None = None,
    ) -> BackupRecord:
        """Record a backup attempt as ``running``; ``backup_id`` is the manifest's id."""
        if not BACKUP_ID_RE.match(backup_id):
            raise ValueError(f"backup id must be 32 lowercase hex digits (got {backup_id!r})")
        _check_aware(started_at, "started_at")
        if attempt < 1:
            raise ValueError(f"attempt must be >= 1 (got {attempt})")
        with self._session(write=True) as session:
            if session.get(Backup, backup_id) is not None:
                raise CatalogError(f"backup {backup_id} is already recorded")
            row = Backup(
                id=backup_id,
                target=target,
                database=database,
                started_at=started_at,
                status=BackupStatus.RUNNING,
                tags=list(tags),
                format=format,
                compression=compression,
                path=path,
                pinned=False,
                attempt=attempt,
            )
            session.add(row)
            session.flush()
            return BackupRecord.of(row)

    def record_backup_finish(
        self,
        backup_id: str,
        *,
        status: BackupStatus,
        finished_at: datetime,
        path: str | None = None,
        size_bytes: int | None = None,
        sha256: str | None = None,
        compression: str | None = None,
        error: str | None = None,
        duration_s: float | None = None,
    ) -> BackupRecord:
        """Record how an attempt ended (``complete``, ``failed`` or ``interrupted``).

        ``error`` must already be redacted.  ``duration_s`` defaults to finished - started.
        An attempt that start-up marked ``interrupted`` while it was in fact still running
        (a one-shot CLI backup beside a restarting daemon) may still be finished.
        """
        if status not in FINISH_STATUSES:
            raise ValueError(
                f"status must be one of {tuple(map(str, FINISH_STATUSES))} (got {status!r})"
            )
        _check_aware(finished_at, "finished_at")
        with self._session(write=True) as session:
            row = backup_row(session, backup_id)
            if row.status not in (BackupStatus.RUNNING, BackupStatus.INTERRUPTED):
                raise CatalogError(f"backup {row.id} is already {row.status}; cannot finish it")
            row.status = status
            row.finished_at = finished_at
            row.duration_s = (
                duration_s
                if duration_s is not None
                else max(0.0, (finished_at - row.started_at).total_seconds())
            )
            row.error = error
            for name, value in (
                ("path", path),
                ("size_bytes", size_bytes),
                ("sha256", sha256),
                ("compression", compression),
            ):
                if value is not None:
                    setattr(row, name, value)
            return BackupRecord.of(row)

    def mark_running_interrupted(
        self, error: str = INTERRUPTED_MESSAGE, at: datetime | None = None, *, backups: bool = True
    ) -> int:
        """Mark every ``running`` drill (and backup, unless ``backups`` is false: the run locks
        say which are dead, :mod:`pgwarden.backup.reap`) as interrupted; return how many backups.
        """
        at = at or _now()
        _check_aware(at, "at")
        with self._session(write=True) as session:
            running = select(Backup).where(Backup.status == BackupStatus.RUNNING)
            backups_rows = session.scalars(running).all() if backups else []
            for row in backups_rows:
                row.status, row.finished_at = BackupStatus.INTERRUPTED, at
                row.error = row.error or error
            drills = session.scalars(
                select(Verification).where(Verification.status == DrillStatus.RUNNING)
            ).all()
            for drill in drills:
                drill.status, drill.finished_at = DrillStatus.INTERRUPTED, at
                drill.error = drill.error or error
            return len(backups_rows)

    def list_backups(
        self,
        target: str | None = None,
        statuses: Collection[BackupStatus] | None = None,
        limit: int | None = None,
    ) -> list[BackupRecord]:
        """Backups, newest first, optionally of one target and with given statuses.

        Read as plain rows, not ORM objects: a catalog of 100,000 runs is listed in a third
        of the time (nothing here is written back)."""
        unknown = set(statuses or ()) - set(BACKUP_STATUSES)
        if unknown:
            raise ValueError(f"unknown backup statuses {sorted(unknown)}")
        query = select(*Backup.__table__.columns).order_by(
            Backup.started_at.desc(), Backup.id.desc()
        )
        if target is not None:
            query = query.where(Backup.target == target)
        if statuses is not None:
            query = query.where(Backup.status.in_(list(statuses)))
        if limit is not None:
            query = query.limit(limit)
        with self._session(write=False) as session:
            return [BackupRecord.of(row) for row in session.execute(query)]

    def get_backup(self, ref: str, target: str | None = None) -> BackupRecord:
        """A backup by id, unique id prefix (at least 4 hex digits) or artifact name."""
        with self._session(write=False) as session:
            return BackupRecord.of(backup_row(session, ref, target))

    def set_pinned(self, ref: str, pinned: bool, target: str | None = None) -> BackupRecord:
        """Pin (keep out of retention) or unpin a backup; only complete ones can be pinned."""
        with self._session(write=True) as session:
            row = backup_row(session, ref, target)
            if pinned and row.status != BackupStatus.COMPLETE:
                raise UsageError(f"backup {row.id[:8]} is {row.status}; only complete backups pin")
            row.pinned = pinned
            return BackupRecord.of(row)

    def mark_deleted(self, backup_id: str, at: datetime | None = None) -> BackupRecord:
        """Record that retention (or an operator) removed a backup from storage."""
        at = at or _now()
        _check_aware(at, "at")
        with self._session(write=True) as session:
            row = backup_row(session, backup_id)
            row.status, row.deleted_at, row.pinned = BackupStatus.DELETED, at, False
            return BackupRecord.of(row)

    def mark_absent_deleted(
        self, present_ids: Collection[str], target: str | None = None
    ) -> list[str]:
        """For ``catalog rebuild``: complete backups whose manifest is gone become deleted."""
        present = set(present_ids)
        query = select(Backup).where(Backup.status == BackupStatus.COMPLETE)
        if target is not None:
            query = query.where(Backup.target == target)
        now = _now()
        with self._session(write=True) as session:
            gone = [row for row in session.scalars(query) if row.id not in present]
            for row in gone:
                row.status, row.deleted_at, row.pinned = BackupStatus.DELETED, now, False
            return [row.id for row in gone]

    def last_success(self, target: str) -> BackupRecord | None:
        """The newest ``complete`` backup of ``target`` still in storage, or ``None``."""
        found = self.list_backups(target, statuses=(BackupStatus.COMPLETE,), limit=1)
        return found[0] if found else None

    def last_run(self, target: str, kind: str) -> datetime | None:
        """When a ``backup`` or ``verify`` job last started for ``target`` (any outcome).

        The scheduler uses it to decide on one catch-up run after downtime.  Other kinds
        (``prune``) leave no history here: ``None``.
        """
        if kind == "backup":
            query = select(func.max(Backup.started_at)).where(Backup.target == target)
        elif kind == "verify":
            query = (
                select(func.max(Verification.started_at))
                .join(Backup)
                .where(Backup.target == target)
            )
        else:
            return None
        with self._session(write=False) as session:
            value = session.execute(query).scalar_one_or_none()
        return _as_utc(value)

    # -- verifications ----------------------------------------------------------------------

    def start_verification(
        self, backup_id: str, started_at: datetime, details: Mapping[str, Any] | None = None
    ) -> VerificationRecord:
        """Record a drill as ``running`` (finished later by :meth:`finish_verification`)."""
        _check_aware(started_at, "started_at")
        with self._session(write=True) as session:
            drill = start_drill(session, backup_row(session, backup_id), started_at, details)
            return VerificationRecord.of(drill)

    def running_verifications(self) -> list[VerificationRecord]:
        """The drills recorded ``running`` (alive, or left by a dead process), oldest first."""
        query = (
            select(Verification)
            .where(Verification.status == DrillStatus.RUNNING)
            .order_by(Verification.id)
        )
        with self._session(write=False) as session:
            return [VerificationRecord.of(drill) for drill in session.scalars(query)]

    def finish_verification(
        self,
        verification_id: int,
        *,
        status: DrillStatus,
        finished_at: datetime,
        details: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> VerificationRecord:
        """Record a drill's outcome; ``passed``/``failed`` also update the backup's summary."""
        if status not in DRILL_ENDINGS:
            raise ValueError(f"status must be passed, failed or interrupted (got {status!r})")
        _check_aware(finished_at, "finished_at")
        with self._session(write=True) as session:
            drill = finish_drill(
                session,
                verification_id,
                status=status,
                finished_at=finished_at,
                details=details,
                error=error,
            )
            return VerificationRecord.of(drill)

    def record_verification(
        self,
        backup_id: str,
        *,
        started_at: datetime,
        finished_at: datetime,
        status: DrillStatus,
        details: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> VerificationRecord:
        """Record a finished drill in one call."""
        started = self.start_verification(backup_id, started_at)
        return self.finish_verification(
            started.id, status=status, finished_at=finished_at, details=details, error=error
        )

    def list_verifications(
        self, backup_id: str | None = None, target: str | None = None, limit: int | None = None
    ) -> list[VerificationRecord]:
        """Drills, newest first, of one backup or of one target's backups."""
        query = select(Verification).order_by(
            Verification.started_at.desc(), Verification.id.desc()
        )
        if target is not None:
            query = query.join(Backup).where(Backup.target == target)
        if limit is not None:
            query = query.limit(limit)
        with self._session(write=False) as session:
            if backup_id is not None:
                row = backup_row(session, backup_id)
                query = query.where(Verification.backup_id == row.id)
            return [VerificationRecord.of(drill) for drill in session.scalars(query)]

    # -- rebuild and summaries --------------------------------------------------------------

    def upsert_from_manifest(
        self, manifest: Mapping[str, Any], *, path: str | None = None, where: str = "manifest"
    ) -> BackupRecord:
        """Create or refresh a backup's row from its manifest (``catalog rebuild``).

        A manifest exists only for a published backup, so the row becomes ``complete``.  Its
        verifications are added unless a drill with the same start time is recorded already.
        ``pinned`` is taken from the manifest when it says, else kept.
        """
        facts = read_manifest_facts(manifest, where)
        with self._session(write=True) as session:
            return BackupRecord.of(apply_manifest_facts(session, facts, path))

    def targets(self) -> list[str]:
        """Every target that has history in the catalog."""
        with self._session(write=False) as session:
            return list(session.scalars(select(Backup.target).distinct().order_by(Backup.target)))

    def summaries(self) -> dict[str, TargetSummary]:
        """Per-target history for restoring metrics at start-up (see :class:`TargetSummary`)."""
        with self._session(write=False) as session:
            return summarise(session)

    def summary(self, target: str) -> TargetSummary | None:
        """:meth:`summaries` of one target (``None`` without history)."""
        with self._session(write=False) as session:
            return summarise(session, target).get(target)
