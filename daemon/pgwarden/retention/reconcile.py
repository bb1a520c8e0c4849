"""Keeping the catalog and the storage in agreement; the storage holds the truth.

This module owns three things:

- :func:`scan` -- what storage holds: every manifest with whether its artifact exists, and the
  orphans (artifacts without a manifest).  A *backup* is an artifact with its manifest.
- :func:`find_problems` -- for ``pgwarden check``: orphan files, manifests without their
  artifact, unreadable manifests, catalog rows listed as complete that storage does not hold,
  backups in storage the catalog does not list.  Each :class:`Problem` has a message.
- :func:`rebuild_catalog` -- ``pgwarden catalog rebuild``: every readable manifest whose
  artifact exists creates or refreshes its row (:meth:`Catalog.upsert_from_manifest`: status,
  facts, tags, pins, drills); complete rows whose backup is gone are marked deleted.  Rebuild
  never deletes a file: orphans and manifests without an artifact are reported.  A target for
  which storage holds nothing at all (an unmounted disk looks like that) keeps its rows.
- :func:`set_pin` -- ``pgwarden pin|unpin`` (CLI and socket): the catalog *and* the manifest's
  ``pinned``, so that a rebuilt catalog keeps the pin.  Pinning writes the catalog first (the
  backup is protected at once), unpinning the manifest first.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pgwarden.catalog import BackupRecord, BackupStatus, Catalog, read_manifest_facts
from pgwarden.errors import BackupError, CatalogError, UsageError
from pgwarden.storage import Storage, manifest_name
from pgwarden.storage.locks import BackupLocks

Severity = Literal["error", "warning"]
#: how long a pin waits for a prune deleting its backup to let go of the backup's lock
PIN_LOCK_TIMEOUT_S = 30.0
REBUILD_HINT = "`pgwarden catalog rebuild` repairs the catalog"


@dataclass(frozen=True)
class Problem:
    """One disagreement between catalog and storage, with a message for people."""

    kind: str  # orphan_file, manifest_without_artifact, unreadable_manifest, missing_backup,
    #            not_in_catalog, no_storage
    severity: Severity
    target: str
    message: str
    path: str | None = None
    backup_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StoredBackup:
    """A manifest in storage; ``has_artifact`` tells whether it still describes a backup."""

    target: str
    name: str  # the artifact's name
    manifest: Path
    artifact: Path
    has_artifact: bool


def artifact_name(path: str | None) -> str | None:
    """The artifact name of a catalog row's ``path`` (a name, or ``target/name``)."""
    return PurePosixPath(path).name if path else None


def scan(storage: Storage, target: str | None = None) -> list[StoredBackup]:
    """Every manifest of ``target`` (or of all targets), oldest first by name."""
    found = []
    for manifest in storage.list_manifests(target):
        artifact = storage.artifact_for(manifest)
        found.append(
            StoredBackup(
                storage.target_of(manifest.parent),
                artifact.name,
                manifest,
                artifact,
                artifact.exists() or artifact.is_symlink(),
            )
        )
    return found


def _read(storage: Storage, stored: StoredBackup) -> tuple[dict[str, Any], str]:
    """The manifest document and its id; :class:`BackupError` names what is wrong."""
    data = storage.read_manifest(stored.manifest)
    try:
        facts = read_manifest_facts(data, str(stored.manifest))
    except CatalogError as exc:
        raise BackupError(str(exc)) from exc
    if facts.target != stored.target:
        raise BackupError(
            f"{stored.manifest}: says target {facts.target!r} but lies in the "
            f"directory of {stored.target!r}"
        )
    return data, facts.id


def manifest_damage(storage: Storage, stored: StoredBackup, backup_id: str) -> str | None:
    """Why ``stored``'s manifest does not describe backup ``backup_id`` (unreadable, another
    backup's), or ``None`` when it does: retention counts only backups it can read."""
    try:
        _, found = _read(storage, stored)
    except BackupError as exc:
        return str(exc)
    return None if found == backup_id else f"{stored.manifest} describes backup {found[:8]}"


def _orphan_problem(target: str, path: Path, row: BackupRecord | None = None) -> Problem:
    listed = f" (the catalog lists backup {row.id[:8]} as complete)" if row else ""
    return Problem(
        "orphan_file",
        "warning",
        target,
        f"{path}: a file without a manifest is not a backup{listed}; an interrupted publish "
        "leaves one (a backup being published right now does too) -- remove it by hand",
        path=str(path),
        backup_id=row.id if row else None,
    )


def _dangling_problem(stored: StoredBackup) -> Problem:
    return Problem(
        "manifest_without_artifact",
        "error",
        stored.target,
        f"{stored.manifest}: manifest without its backup file {stored.name}: that backup is "
        f"gone; {REBUILD_HINT} (marks it deleted), then remove the manifest",
        path=str(stored.manifest),
    )


def _unreadable_problem(stored: StoredBackup, exc: BackupError) -> Problem:
    message = f"{exc} -- the catalog cannot be rebuilt from it"
    return Problem("unreadable_manifest", "error", stored.target, message, str(stored.manifest))


def find_problems(catalog: Catalog, storage: Storage, target: str | None = None) -> list[Problem]:
    """Everything on which catalog and storage disagree, for ``pgwarden check``."""
    problems: list[Problem] = []
    in_storage: dict[str, StoredBackup] = {}
    dangling_ids: set[str] = set()
    for stored in scan(storage, target):
        try:
            _, backup_id = _read(storage, stored)
        except BackupError as exc:
            problems.append(_unreadable_problem(stored, exc))
            continue
        if stored.has_artifact:
            in_storage[backup_id] = stored
        else:
            dangling_ids.add(backup_id)
            problems.append(_dangling_problem(stored))
    complete = catalog.list_backups(target, statuses=(BackupStatus.COMPLETE,))
    by_name = {(r.target, artifact_name(r.path)): r for r in complete}
    orphan_names: set[tuple[str, str]] = set()
    for orphan in storage.list_orphans(target):
        key = (storage.target_of(orphan.parent), orphan.name)
        orphan_names.add(key)
        problems.append(_orphan_problem(key[0], orphan, by_name.get(key)))
    for row in complete:
        if row.id in in_storage or row.id in dangling_ids:
            continue
        if (row.target, artifact_name(row.path)) in orphan_names:
            continue  # reported with the orphan
        problems.append(
            Problem(
                "missing_backup",
                "error",
                row.target,
                f"the catalog lists backup {row.id[:8]} of {row.target} ({row.path}, started "
                f"{row.started_at:%Y-%m-%d %H:%M} UTC) as complete, but storage has neither its "
                f"file nor its manifest; {REBUILD_HINT} (marks it deleted)",
                backup_id=row.id,
            )
        )
    listed = {r.id for r in complete}
    for backup_id, stored in in_storage.items():
        if backup_id not in listed:
            problems.append(
                Problem(
                    "not_in_catalog",
                    "warning",
                    stored.target,
                    f"{stored.artifact}: a backup in storage that the catalog does not list as "
                    f"complete (so retention does not count it); {REBUILD_HINT}",
                    path=str(stored.artifact),
                    backup_id=backup_id,
                )
            )
    return problems


@dataclass
class RebuildReport:
    """What :func:`rebuild_catalog` did."""

    location: str
    manifests: int = 0
    added: list[str] = field(default_factory=list)
    refreshed: list[str] = field(default_factory=list)
    marked_deleted: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """False when some manifest could not be indexed (the catalog is incomplete); the
        other problems are reported but do not keep the catalog from being right."""
        return not any(p.kind == "unreadable_manifest" for p in self.problems)

    def as_dict(self) -> dict[str, Any]:
        return {
            "storage": self.location,
            "manifests": self.manifests,
            "added": self.added,
            "refreshed": self.refreshed,
            "marked_deleted": self.marked_deleted,
            "targets": self.targets,
            "problems": [p.as_dict() for p in self.problems],
            "ok": self.ok,
        }


def rebuild_catalog(catalog: Catalog, storage: Storage, target: str | None = None) -> RebuildReport:
    """Recreate or refresh the catalog from the manifests in storage (module docstring)."""
    report = RebuildReport(storage.location)
    before = {r.id: r for r in catalog.list_backups(target)}
    present: set[str] = set()
    seen_targets: set[str] = set()
    for stored in scan(storage, target):
        report.manifests += 1
        seen_targets.add(stored.target)
        try:
            data, backup_id = _read(storage, stored)
        except BackupError as exc:
            report.problems.append(_unreadable_problem(stored, exc))
            # a damaged description does not make the file go away: keep its row as it is
            present.update(
                r.id
                for r in before.values()
                if r.target == stored.target and artifact_name(r.path) == stored.name
            )
            continue
        if not stored.has_artifact:
            report.problems.append(_dangling_problem(stored))
            continue
        catalog.upsert_from_manifest(data, path=stored.name, where=str(stored.manifest))
        present.add(backup_id)
        (report.refreshed if backup_id in before else report.added).append(backup_id)
    for orphan in storage.list_orphans(target):
        seen_targets.add(storage.target_of(orphan.parent))
        report.problems.append(_orphan_problem(storage.target_of(orphan.parent), orphan))
    complete_targets = {r.target for r in before.values() if r.status == BackupStatus.COMPLETE}
    for name in sorted(complete_targets | seen_targets):
        if name not in seen_targets:
            count = sum(
                1 for r in before.values() if r.target == name and r.status == BackupStatus.COMPLETE
            )
            report.problems.append(
                Problem(
                    "no_storage",
                    "warning",
                    name,
                    f"storage {storage.location} holds nothing for target {name} (is it mounted?): "
                    f"its {count} complete catalog backups are left as they are",
                )
            )
            continue
        report.marked_deleted.extend(catalog.mark_absent_deleted(present, name))
    report.targets = sorted(seen_targets)
    return report


def _manifest_path(storage: Storage, record: BackupRecord) -> Path | None:
    name = artifact_name(record.path)
    return storage.target_dir(record.target) / manifest_name(name) if name else None


def _write_pinned(
    storage: Storage,
    record: BackupRecord,
    manifest: Path,
    pinned: bool,
    locks: BackupLocks | None,
) -> None:
    guard: AbstractContextManager[Any] = (
        locks.manifest_update(record.id) if locks is not None else nullcontext()
    )
    with guard:
        data = storage.read_manifest(manifest)
        if data.get("pinned") is pinned:
            return
        data["pinned"] = pinned
        text = json.dumps(data, indent=2) + "\n"
        storage.write_manifest_atomic(record.target, manifest.name, text.encode())


def set_pin(
    catalog: Catalog,
    storage: Storage,
    ref: str,
    pinned: bool,
    *,
    locks: BackupLocks,
    target: str | None = None,
    lock_timeout: float = PIN_LOCK_TIMEOUT_S,
) -> BackupRecord:
    """Pin or unpin a backup in the catalog and in its manifest; return the updated row.

    Pinning holds the backup's shared lock, as a reader does: a prune deleting the backup holds
    it exclusively, so a pin either waits for the deletion and then says the backup is gone,
    or comes first and the prune (which re-reads the row under its lock) keeps it.  A pin
    never reports success on a backup being deleted.  Unpinning needs no such lock."""
    record = catalog.get_backup(ref, target)
    if not pinned:
        return _unpin(catalog, storage, record, locks)
    with locks.shared(record.id, timeout=lock_timeout):
        record = catalog.get_backup(record.id)  # a prune may have deleted it meanwhile
        if record.status != BackupStatus.COMPLETE:
            raise UsageError(
                f"backup {record.id[:8]} is {record.status}; only complete backups pin"
            )
        manifest = _manifest_path(storage, record)
        if manifest is None or not manifest.exists():
            raise BackupError(
                f"backup {record.id[:8]} has no manifest in storage ({manifest}); {REBUILD_HINT}"
            )
        record = catalog.set_pinned(record.id, True)
        try:
            _write_pinned(storage, record, manifest, True, locks)
        except BackupError as exc:
            raise BackupError(
                f"backup {record.id[:8]} is pinned in the catalog, but its "
                f"manifest could not say so (a catalog rebuild would lose the "
                f"pin): {exc}"
            ) from exc
        return record


def _unpin(
    catalog: Catalog, storage: Storage, record: BackupRecord, locks: BackupLocks
) -> BackupRecord:
    manifest = _manifest_path(storage, record)
    if manifest is not None and manifest.exists():
        _write_pinned(storage, record, manifest, False, locks)
    return catalog.set_pinned(record.id, False)


def problems_by_target(problems: list[Problem]) -> Iterator[tuple[str, list[Problem]]]:
    """Problems grouped by target, targets in name order (for printing)."""
    for name in sorted({p.target for p in problems}):
        yield name, [p for p in problems if p.target == name]
