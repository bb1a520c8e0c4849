"""Applying retention to one target: plan with :mod:`~pgwarden.retention.plan`, then delete.

This module owns the *applying*: which facts the planner sees, the locks, the order of
deletion, and the report (:class:`PruneOutcome`).

What the planner sees.  The storage holds the truth, so the catalog's rows are checked
against it first (one directory listing, no writes):

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

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pgwarden.catalog import BackupRecord, Catalog
from pgwarden.config import TargetConfig
from pgwarden.errors import BackupError, CatalogError, NotFoundError
from pgwarden.logsetup import get_logger
from pgwarden.retention import plan as retention
from pgwarden.retention.reconcile import REBUILD_HINT, artifact_name, scan
from pgwarden.storage import PARTIAL_SUFFIX, Storage, manifest_name
from pgwarden.storage.locks import BackupLocks

log = get_logger("pgwarden.prune")

#: statuses worth planning; ``deleted`` rows have nothing left to touch
LIVE_STATUSES = ("running", "complete", "failed", "interrupted")
IN_USE = "in_use"
NOT_IN_STORAGE = "not_in_storage"


@dataclass
class Entry:
    """One backup in a prune report: the decision, its reason, and what happened."""

    record: BackupRecord
    action: retention.Action
    reason: str
    rules: tuple[str, ...]
    #: kept, deleted, would delete (dry run), not deleted (an error), already deleted
    result: str = "kept"
    notes: list[str] = field(default_factory=list)

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


@dataclass
class PruneOutcome:
    """What a prune of one target decided and did; ``as_dict`` is the job's result."""

    target: str
    dry_run: bool
    now: datetime
    entries: list[Entry] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    stored_bytes: int | None = None

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def deleted(self) -> int:
        return sum(1 for e in self.entries if e.result == "deleted")

    @property
    def freed_bytes(self) -> int:
        return sum(
            e.record.size_bytes or 0
            for e in self.entries
            if e.result == "deleted" and e.record.status == "complete"
        )

    def kept_complete(self) -> list[BackupRecord]:
        """The complete backups still in storage after this prune."""
        return [
            e.record
            for e in self.entries
            if e.record.status == "complete"
            and e.result != "deleted"
            and NOT_IN_STORAGE not in e.rules
        ]

    def as_dict(self) -> dict[str, Any]:
        kept = self.kept_complete()
        oldest = min((r.started_at for r in kept), default=None)
        by_state: dict[str, int] = {}
        for entry in self.entries:
            if entry.result != "deleted":
                by_state[entry.record.status] = by_state.get(entry.record.status, 0) + 1
        return {
            "target": self.target,
            "dry_run": self.dry_run,
            "now": self.now.isoformat(),
            "deleted": self.deleted,
            "would_delete": sum(1 for e in self.entries if e.result == "would delete"),
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
    outcome = PruneOutcome(target.name, dry_run, now)
    rows = catalog.list_backups(target.name)
    plannable, unplanned = _against_storage(storage, target.name, rows, outcome)
    plan = retention.plan(plannable, target.retention, now)
    originals = {r.id: r for r in rows}
    by_id = {r.id: r for r in plannable}
    deleter = _Deleter(catalog, storage, locks, outcome)
    for decision in plan.decisions:
        entry = Entry(by_id[decision.backup_id], decision.action, decision.reason, decision.rules)
        outcome.entries.append(entry)
        if decision.action == retention.DELETE:
            if dry_run:
                entry.result = "would delete"
            else:
                deleter.delete(entry, originals[decision.backup_id])
    outcome.entries.extend(unplanned)
    outcome.entries.sort(key=lambda e: (e.record.started_at, e.record.id), reverse=True)
    try:
        outcome.stored_bytes = storage.stored_bytes(target.name)
    except (BackupError, OSError) as exc:
        outcome.warnings.append(f"cannot measure the stored bytes: {exc}")
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
    storage: Storage, target: str, rows: list[BackupRecord], outcome: PruneOutcome
) -> tuple[list[BackupRecord], list[Entry]]:
    """The rows the planner sees (checked against storage) and the entries left out of it."""
    stored = {s.name: s for s in scan(storage, target)}
    plannable: list[BackupRecord] = []
    unplanned: list[Entry] = []
    for row in rows:
        if row.status not in LIVE_STATUSES:
            continue
        found = stored.get(artifact_name(row.path) or "")
        whole = found is not None and found.has_artifact
        if row.status == "complete" and not whole:
            what = "its manifest" if found is None else "its file"
            reason = f"not in storage ({what} is missing): not counted, not touched; {REBUILD_HINT}"
            unplanned.append(Entry(row, retention.KEEP, reason, (NOT_IN_STORAGE,)))
            outcome.warnings.append(
                f"backup {row.short_id}: catalog says complete, but {what} "
                f"is missing from storage; {REBUILD_HINT}"
            )
        elif row.status in ("failed", "interrupted") and whole:
            plannable.append(dataclasses.replace(row, status="complete"))
            outcome.warnings.append(
                f"backup {row.short_id}: catalog says {row.status}, but "
                f"storage holds it complete; planned as complete; "
                f"{REBUILD_HINT}"
            )
        else:
            plannable.append(row)
    known = {artifact_name(r.path) for r in rows}
    unknown = sorted(name for name, s in stored.items() if s.has_artifact and name not in known)
    if unknown:
        outcome.warnings.append(
            f"{len(unknown)} backup(s) in storage are not in the catalog "
            f"(not counted, not touched: {', '.join(unknown[:5])}); "
            f"{REBUILD_HINT}"
        )
    return plannable, unplanned


@dataclass
class _Deleter:
    """Applies the deletions of one prune (module docstring, "Applying one deletion")."""

    catalog: Catalog
    storage: Storage
    locks: BackupLocks
    outcome: PruneOutcome

    def delete(self, entry: Entry, original: BackupRecord) -> None:
        """Delete one backup, or report why not; never raises for this backup's files."""
        try:
            self._delete(entry, original)
        except OSError as exc:  # the lock directory, a stat: this backup stays, the rest go on
            entry.result = "not deleted"
            where = f" ({exc.filename})" if exc.filename else ""
            self._error(entry, f"cannot lock it or look at its files: {exc.strerror or exc}{where}")

    def _delete(self, entry: Entry, original: BackupRecord) -> None:
        backup_id = original.id
        with self.locks.try_exclusive(backup_id) as lock:
            if not lock.held:
                entry.action, entry.rules = retention.KEEP, (IN_USE,)
                entry.reason = "in use (a restore or a restore drill is reading it): kept this time"
                return
            try:
                current: BackupRecord | None = self.catalog.get_backup(backup_id)
            except NotFoundError:
                current = None
            if current is None or current.status == "deleted":
                entry.result = "already deleted"
                lock.discard()
                return
            if current.pinned or current.status != original.status:
                why = "pinned" if current.pinned else f"now {current.status}"
                entry.action, entry.rules = retention.KEEP, ("changed",)
                entry.reason = f"changed since planning ({why}): kept this time"
                return
            if not self._delete_files(entry):
                entry.result = "not deleted"
                return
            try:
                self.catalog.mark_deleted(backup_id, at=datetime.now(UTC))
            except CatalogError as exc:
                entry.result = "not deleted"
                self._error(entry, f"files deleted, but the catalog was not updated: {exc}")
                return
            entry.result = "deleted"
            lock.discard()
        log.info(
            "deleted backup",
            target=self.outcome.target,
            backup=entry.record.short_id,
            status=original.status,
            reason=entry.reason,
        )

    def _error(self, entry: Entry, message: str) -> None:
        entry.notes.append(message)
        self.outcome.errors.append(f"backup {entry.record.short_id}: {message}")
        log.error(
            "prune could not delete",
            target=self.outcome.target,
            backup=entry.record.short_id,
            error=message,
        )

    def _note(self, entry: Entry, message: str) -> None:
        entry.notes.append(message)
        self.outcome.warnings.append(f"backup {entry.record.short_id}: {message}")

    def _remove(self, entry: Entry, path: Path, what: str) -> bool:
        """Delete ``path`` if it exists; False (reported) if it is still there."""
        if not _exists(path):
            return True
        try:
            self.storage.delete(path)
        except BackupError as exc:
            self._error(entry, f"cannot delete {what}: {exc}")
        return not _exists(path)

    def _delete_files(self, entry: Entry) -> bool:
        """Artifact, then manifest, then (runs that did not complete) a leftover partial.
        False when the backup must stay whole: its artifact is still there."""
        record = entry.record
        name = artifact_name(record.path)
        if name is None:
            return True  # a run that never named a file left nothing behind
        complete = record.status == "complete"
        try:
            directory = self.storage.target_dir(record.target)
        except BackupError as exc:
            self._error(entry, str(exc))
            return False
        artifact = directory / name
        manifest = directory / manifest_name(name)
        if complete and not _exists(artifact):
            self._note(entry, f"the backup file {name} was already missing")
        if not self._remove(entry, artifact, "the backup file"):
            return False
        if complete and not _exists(manifest):
            self._note(entry, f"the manifest of {name} was already missing")
        self._remove(entry, manifest, "the manifest (the backup file is deleted)")
        if not complete:
            self._remove(entry, directory / (name + PARTIAL_SUFFIX), "a leftover partial file")
        return True


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()
