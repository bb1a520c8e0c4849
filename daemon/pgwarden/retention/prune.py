"""Applying retention to one target: plan with :mod:`~pgwarden.retention.plan`, then delete.

This module owns the *applying*: which facts the planner sees, the locks, the order of
deletion, and the report (:class:`PruneOutcome`).

What the planner sees.  The storage holds the truth, so the catalog's rows are checked
against it first (one directory listing and a read of each manifest, no writes):

- a row whose manifest cannot be read (truncated, damaged, another backup's) is not a backup:
  left out of the plan (it must neither count toward ``min_keep`` nor stand in for the
  newest verified backup), kept, and reported;
- a row marked complete whose manifest or artifact is missing is not a backup: it is left out
  of the plan (it must not count toward ``min_keep``), kept, and reported;
- a row marked failed or interrupted whose manifest and artifact both exist *is* a complete
  backup (the run died after publishing): it is planned as complete, and reported;
- a backup in storage that the catalog does not list is not touched, and reported.
``pgwarden catalog rebuild`` repairs all three (:mod:`~pgwarden.retention.reconcile`).

Applying one deletion.  Without waiting, take the backup's exclusive lock
(:class:`~pgwarden.storage.locks.BackupLocks`); a backup held by a restore or a drill is kept
this time ("in use").  Read its row again (a pin or another prune since planning wins).  Then
delete the artifact, then the manifest, then mark the row deleted: a crash in between leaves
a manifest without an artifact, which is recognisable, never an artifact that still looks
like a backup.  If the artifact cannot be deleted the backup is left whole (manifest and row
untouched) and the error reported; a missing file is reported and the deletion goes on.  One
backup's trouble never stops the others.  Only the backups the plan names are touched.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pgwarden.catalog import LIVE_STATUSES, BackupRecord, BackupStatus, Catalog
from pgwarden.config import TargetConfig
from pgwarden.errors import BackupError, CatalogError, NotFoundError, PgwardenError
from pgwarden.logsetup import get_logger
from pgwarden.retention import plan as retention
from pgwarden.retention.reconcile import REBUILD_HINT, artifact_name, manifest_damage, scan
from pgwarden.storage import PARTIAL_SUFFIX, Storage, manifest_name
from pgwarden.storage.locks import BackupLocks

log = get_logger("pgwarden.prune")

IN_USE = "in_use"
NOT_IN_STORAGE = "not_in_storage"
UNREADABLE = "unreadable_manifest"


class Result(enum.StrEnum):
    """What a prune did with one backup (``result`` in its report)."""

    KEPT = "kept"
    DELETED = "deleted"
    WOULD_DELETE = "would delete"  # a dry run
    NOT_DELETED = "not deleted"  # an error: see the entry's notes
    ALREADY_DELETED = "already deleted"


@dataclass(frozen=True)
class Entry:
    """One backup in a prune report: the decision, its reason, and what happened."""

    record: BackupRecord
    action: retention.Action
    reason: str
    rules: tuple[str, ...]
    result: Result = Result.KEPT
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        r = self.record
        return {
            "id": r.id,
            "backup": r.short_id,
            "started_at": r.started_at.isoformat(),
            "status": r.status,
            "size_bytes": r.size_bytes,
            "pinned": r.pinned,
            "tags": list(r.tags),
            "decision": self.action,
            "reason": self.reason,
            "rules": list(self.rules),
            "result": self.result,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class PruneOutcome:
    """What a prune of one target decided and did; ``as_dict`` is the job's result."""

    target: str
    dry_run: bool
    now: datetime
    entries: tuple[Entry, ...] = ()
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    stored_bytes: int | None = None

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def deleted(self) -> int:
        return sum(1 for e in self.entries if e.result == Result.DELETED)

    @property
    def freed_bytes(self) -> int:
        return sum(
            e.record.size_bytes or 0
            for e in self.entries
            if e.result == Result.DELETED and e.record.status == BackupStatus.COMPLETE
        )

    def kept_complete(self) -> list[BackupRecord]:
        """The complete backups still in storage after this prune."""
        return [
            e.record
            for e in self.entries
            if e.record.status == BackupStatus.COMPLETE
            and e.result != Result.DELETED
            and not {NOT_IN_STORAGE, UNREADABLE} & set(e.rules)
        ]

    def as_dict(self) -> dict[str, Any]:
        kept = self.kept_complete()
        oldest = min((r.started_at for r in kept), default=None)
        by_state: dict[str, int] = {}
        for entry in self.entries:
            if entry.result != Result.DELETED:
                by_state[entry.record.status] = by_state.get(entry.record.status, 0) + 1
        return {
            "target": self.target,
            "dry_run": self.dry_run,
            "now": self.now.isoformat(),
            "deleted": self.deleted,
            "would_delete": sum(1 for e in self.entries if e.result == Result.WOULD_DELETE),
            "kept": sum(1 for e in self.entries if e.action == retention.KEEP),
            "freed_bytes": self.freed_bytes,
            "stored_bytes": self.stored_bytes,
            "backups_by_state": by_state,
            "oldest_backup_at": oldest.isoformat() if oldest else None,
            "backups": [e.as_dict() for e in self.entries],
            "errors": list(self.errors),
            "warnings": list(self.warnings),
            "ok": self.ok,
        }


class PruneFailed(PgwardenError):
    """A prune could not delete everything its plan named; ``outcome`` says what happened to
    each backup.  A daemon job ends as failed with it, so that retention that silently stops
    (a file it cannot delete, a directory it cannot write) is counted and alerted on."""

    code = "prune_failed"

    def __init__(self, outcome: PruneOutcome) -> None:
        self.outcome = outcome
        first = outcome.errors[0] if outcome.errors else "unknown error"
        more = f" (and {len(outcome.errors) - 1} more)" if len(outcome.errors) > 1 else ""
        super().__init__(f"prune of {outcome.target} failed: {first}{more}")


def prune_target(
    target: TargetConfig,
    catalog: Catalog,
    storage: Storage,
    *,
    dry_run: bool = False,
    locks: BackupLocks,
    now: datetime | None = None,
) -> PruneOutcome:
    """Plan retention for ``target`` and, unless ``dry_run``, apply it (module docstring)."""
    now = now or datetime.now(UTC)
    rows = catalog.list_backups(target.name)
    deleter = _Deleter(catalog, storage, locks, target.name)
    plannable, entries = _against_storage(storage, target.name, rows, deleter.warnings)
    plan = retention.plan(plannable, target.retention, now)
    originals = {r.id: r for r in rows}
    by_id = {r.id: r for r in plannable}
    for decision in plan.decisions:
        entry = Entry(by_id[decision.backup_id], decision.action, decision.reason, decision.rules)
        if decision.action == retention.DELETE:
            if dry_run:
                entry = replace(entry, result=Result.WOULD_DELETE)
            else:
                entry = deleter.delete(entry, originals[decision.backup_id])
        entries.append(entry)
    entries.sort(key=lambda e: (e.record.started_at, e.record.id), reverse=True)
    stored_bytes: int | None = None
    try:
        stored_bytes = storage.stored_bytes(target.name)
    except (BackupError, OSError) as exc:
        deleter.warnings.append(f"cannot measure the stored bytes: {exc}")
    outcome = PruneOutcome(
        target.name,
        dry_run,
        now,
        entries=tuple(entries),
        errors=tuple(deleter.errors),
        warnings=tuple(deleter.warnings),
        stored_bytes=stored_bytes,
    )
    log.info(
        "prune",
        target=target.name,
        dry_run=dry_run,
        deleted=outcome.deleted,
        kept=len(plan.keep_ids),
        errors=len(outcome.errors),
    )
    return outcome


def _against_storage(
    storage: Storage, target: str, rows: list[BackupRecord], warnings: list[str]
) -> tuple[list[BackupRecord], list[Entry]]:
    """The rows the planner sees (checked against storage) and the entries left out of it;
    what does not match is added to ``warnings``."""
    stored = {s.name: s for s in scan(storage, target)}
    plannable: list[BackupRecord] = []
    unplanned: list[Entry] = []
    for row in rows:
        if row.status not in LIVE_STATUSES:
            continue
        found = stored.get(artifact_name(row.path) or "")
        whole = found is not None and found.has_artifact
        damage = manifest_damage(storage, found, row.id) if found and whole else None
        if damage is not None:
            reason = f"its manifest cannot be read: not counted, not touched; {REBUILD_HINT}"
            unplanned.append(Entry(row, retention.KEEP, reason, (UNREADABLE,)))
            warnings.append(f"backup {row.short_id}: {damage}; {REBUILD_HINT}")
        elif row.status == BackupStatus.COMPLETE and not whole:
            what = "its manifest" if found is None else "its file"
            reason = f"not in storage ({what} is missing): not counted, not touched; {REBUILD_HINT}"
            unplanned.append(Entry(row, retention.KEEP, reason, (NOT_IN_STORAGE,)))
            warnings.append(
                f"backup {row.short_id}: catalog says complete, but {what} "
                f"is missing from storage; {REBUILD_HINT}"
            )
        elif row.status in (BackupStatus.FAILED, BackupStatus.INTERRUPTED) and whole:
            plannable.append(replace(row, status=BackupStatus.COMPLETE))
            warnings.append(
                f"backup {row.short_id}: catalog says {row.status}, but "
                f"storage holds it complete; planned as complete; "
                f"{REBUILD_HINT}"
            )
        else:
            plannable.append(row)
    known = {artifact_name(r.path) for r in rows}
    unknown = sorted(name for name, s in stored.items() if s.has_artifact and name not in known)
    if unknown:
        warnings.append(
            f"{len(unknown)} backup(s) in storage are not in the catalog "
            f"(not counted, not touched: {', '.join(unknown[:5])}); "
            f"{REBUILD_HINT}"
        )
    return plannable, unplanned


@dataclass
class _Deleter:
    """Applies the deletions of one prune (module docstring, "Applying one deletion") and
    collects the prune's errors and warnings."""

    catalog: Catalog
    storage: Storage
    locks: BackupLocks
    target: str
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def delete(self, entry: Entry, original: BackupRecord) -> Entry:
        """Delete one backup, or report why not; never raises for this backup's files.
        Returns ``entry`` with what happened (result, a changed decision, notes)."""
        notes: list[str] = []
        try:
            done = self._delete(entry, original, notes)
        except OSError as exc:  # the lock directory, a stat: this backup stays, the rest go on
            where = f" ({exc.filename})" if exc.filename else ""
            message = f"cannot lock it or look at its files: {exc.strerror or exc}{where}"
            self._error(entry, notes, message)
            done = replace(entry, result=Result.NOT_DELETED)
        return replace(done, notes=(*done.notes, *notes)) if notes else done

    def _delete(self, entry: Entry, original: BackupRecord, notes: list[str]) -> Entry:
        backup_id = original.id
        with self.locks.try_exclusive(backup_id) as lock:
            if not lock.held:
                return replace(
                    entry,
                    action=retention.KEEP,
                    rules=(IN_USE,),
                    reason="in use (a restore or a restore drill is reading it): kept this time",
                )
            try:
                current: BackupRecord | None = self.catalog.get_backup(backup_id)
            except NotFoundError:
                current = None
            if current is None or current.status == BackupStatus.DELETED:
                lock.discard()
                return replace(entry, result=Result.ALREADY_DELETED)
            if current.pinned or current.status != original.status:
                why = "pinned" if current.pinned else f"now {current.status}"
                return replace(
                    entry,
                    action=retention.KEEP,
                    rules=("changed",),
                    reason=f"changed since planning ({why}): kept this time",
                )
            if not self._delete_files(entry, notes):
                return replace(entry, result=Result.NOT_DELETED)
            try:
                self.catalog.mark_deleted(backup_id, at=datetime.now(UTC))
            except CatalogError as exc:
                self._error(entry, notes, f"files deleted, but the catalog was not updated: {exc}")
                return replace(entry, result=Result.NOT_DELETED)
            lock.discard()
        log.info(
            "deleted backup",
            target=self.target,
            backup=entry.record.short_id,
            status=original.status,
            reason=entry.reason,
        )
        return replace(entry, result=Result.DELETED)

    def _error(self, entry: Entry, notes: list[str], message: str) -> None:
        notes.append(message)
        self.errors.append(f"backup {entry.record.short_id}: {message}")
        log.error(
            "prune could not delete",
            target=self.target,
            backup=entry.record.short_id,
            error=message,
        )

    def _note(self, entry: Entry, notes: list[str], message: str) -> None:
        notes.append(message)
        self.warnings.append(f"backup {entry.record.short_id}: {message}")

    def _remove(self, entry: Entry, notes: list[str], path: Path, what: str) -> bool:
        """Delete ``path`` if it exists; False (reported) if it is still there."""
        if not _exists(path):
            return True
        try:
            self.storage.delete(path)
        except BackupError as exc:
            self._error(entry, notes, f"cannot delete {what}: {exc}")
        return not _exists(path)

    def _delete_files(self, entry: Entry, notes: list[str]) -> bool:
        """Artifact, then manifest, then (runs that did not complete) a leftover partial.
        False when the backup must stay whole: its artifact is still there."""
        record = entry.record
        name = artifact_name(record.path)
        if name is None:
            return True  # a run that never named a file left nothing behind
        complete = record.status == BackupStatus.COMPLETE
        try:
            directory = self.storage.target_dir(record.target)
        except BackupError as exc:
            self._error(entry, notes, str(exc))
            return False
        artifact = directory / name
        manifest = directory / manifest_name(name)
        if complete and not _exists(artifact):
            self._note(entry, notes, f"the backup file {name} was already missing")
        if not self._remove(entry, notes, artifact, "the backup file"):
            return False
        if complete and not _exists(manifest):
            self._note(entry, notes, f"the manifest of {name} was already missing")
        self._remove(entry, notes, manifest, "the manifest (the backup file is deleted)")
        if not complete:
            self._remove(
                entry, notes, directory / (name + PARTIAL_SUFFIX), "a leftover partial file"
            )
        return True


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()
