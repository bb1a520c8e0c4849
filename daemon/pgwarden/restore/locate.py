"""Finding the backup a drill or a restore reads, and holding it while it is read.

:func:`locate` resolves an id, an id prefix or a file name (or "the newest") to a complete
backup present both in the catalog and in the storage, manifest read.  :func:`backup_in_use`
holds a shared lock on it, so retention cannot delete it under a reader.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pgwarden.archive.manifest import Manifest
from pgwarden.catalog import BackupStatus, Catalog
from pgwarden.catalog.records import BackupRecord
from pgwarden.config import Config
from pgwarden.errors import NotFoundError, UsageError
from pgwarden.restore.outcome import StepError
from pgwarden.storage import Storage, manifest_name
from pgwarden.storage.locks import BackupLocks

LOCK_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Located:
    """A complete backup found in the catalog and in the storage."""

    record: BackupRecord
    manifest_path: Path
    manifest: Manifest
    artifact: Path
    #: the off-site copy ``artifact`` was fetched from (its fetcher holds the shared lock)
    fetched_from: str | None = None


def locate(catalog: Catalog, storage: Storage, target: str, ref: str | None) -> Located:
    """The backup ``ref`` (id, prefix or file name) of ``target``, or its newest one."""
    if ref is None:
        record = catalog.last_success(target)
        if record is None:
            raise NotFoundError(f"target {target!r} has no complete backup")
    else:
        record = catalog.get_backup(ref, target)
    if record.status != BackupStatus.COMPLETE or not record.path:
        raise UsageError(
            f"backup {record.short_id} is {record.status}; only complete backups can be restored"
        )
    manifest_path = storage.target_dir(target) / manifest_name(record.path)
    if not manifest_path.exists():
        raise NotFoundError(f"backup {record.short_id}: manifest {manifest_path} is missing")
    manifest = Manifest.from_dict(storage.read_manifest(manifest_path), str(manifest_path))
    artifact = storage.artifact_for(manifest_path)
    if not artifact.exists():
        raise NotFoundError(f"backup {record.short_id}: {artifact} is missing")
    return Located(record, manifest_path, manifest, artifact)


@contextmanager
def backup_in_use(config: Config, catalog: Catalog, located: Located) -> Iterator[None]:
    """A shared lock on the backup: retention cannot delete it while it is read.  A prune
    may have deleted it just before the lock was taken: checked once it is held."""
    if located.fetched_from is not None:  # a fetched copy: its fetcher holds the lock
        yield
        return
    with BackupLocks(config.daemon.state_dir).shared(located.record.id, timeout=LOCK_TIMEOUT_S):
        record = catalog.get_backup(located.record.id)
        if record.status != BackupStatus.COMPLETE or not located.artifact.exists():
            raise StepError(
                "setup", f"backup {record.short_id} was deleted before it could be read"
            )
        yield
