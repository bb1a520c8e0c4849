"""Reaping what dead runs left behind: ``.partial`` files and ``running`` catalog rows.

Every backup run holds its *run lock* (:meth:`pgwarden.storage.locks.BackupLocks.run`, keyed
by the artifact's name) from before it writes its catalog row and ``NAME.partial`` until both
are final.  The kernel drops the lock when its holder dies, so a run lock that can be taken
(without waiting) proves its run dead.  :func:`reap_dead_runs` -- called by the daemon at
start-up and by one-shot commands that open the catalog and the storage -- removes exactly:

- ``NAME.partial`` whose run lock is free, and, when a catalog row names ``NAME``, whose
  backup lock is free too (a deletion renames a dump directory to ``NAME.partial`` under the
  backup's exclusive lock);
- restore spools ``NAME.restore-<hex>.partial`` whose backup ``NAME`` no restore or drill
  holds (they hold its shared lock while the spool exists);

and settles the ``running`` rows whose run lock is free by what the dead run left in storage
(:func:`_settle`): a published artifact *with* its manifest is a complete backup (the run died
after writing the manifest, before recording it) and its row is filled from the manifest; a
published artifact *without* a manifest (the run died while reading it back) is not a backup
and is removed, so no orphan outlives its run; the row is marked ``interrupted``.  Live runs'
files and rows are never touched, whichever process owns them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from pgwarden.catalog import INTERRUPTED_MESSAGE, BackupStatus, Catalog
from pgwarden.catalog.records import BackupRecord
from pgwarden.config import Config
from pgwarden.errors import BackupError, CatalogError
from pgwarden.logsetup import get_logger
from pgwarden.storage import Storage
from pgwarden.storage.base import PARTIAL_SUFFIX, manifest_name
from pgwarden.storage.locks import BackupLocks

log = get_logger("pgwarden.state")

_SPOOL_RE = re.compile(r"^(?P<name>.+)\.restore-[0-9a-f]+$")


@dataclass
class Reaped:
    """What :func:`reap_dead_runs` removed and marked."""

    partials: list[Path] = field(default_factory=list)
    interrupted: list[str] = field(default_factory=list)  # backup ids
    completed: list[str] = field(default_factory=list)  # backup ids whose manifest was written
    orphans: list[Path] = field(default_factory=list)  # published artifacts without manifest


def owner_name(partial: str) -> str:
    """The artifact name a ``*.partial`` belongs to (its run lock's key)."""
    stem = partial.removesuffix(PARTIAL_SUFFIX)
    spool = _SPOOL_RE.match(stem)
    return spool.group("name") if spool else stem


def reap_dead_runs(config: Config, catalog: Catalog, storage: Storage) -> Reaped:
    """Remove the partials and interrupt the ``running`` rows of dead runs (module docstring)."""
    locks = BackupLocks(config.daemon.state_dir)
    running = catalog.list_backups(statuses=(BackupStatus.RUNNING,))
    partials = storage.list_partials()
    # the whole catalog only when there are partials to judge (rarely: debris or live runs)
    records = {r.path: r for r in catalog.list_backups() if r.path} if partials else {}
    reaped = Reaped()
    for path in partials:
        name = owner_name(path.name)
        try:
            if _reap_partial(locks, storage, path, name, records.get(name)):
                reaped.partials.append(path)
        except ValueError:  # not a name pgwarden writes: not ours to judge
            continue
    for record in running:
        if record.path is None:
            # every run records its artifact's name with its row and holds the run lock keyed
            # by it: a running row without one was left by a pgwarden that predates run locks
            _interrupt(catalog, record)
            reaped.interrupted.append(record.id)
            continue
        with locks.try_run(record.path) as run:
            if not run.held:
                continue  # alive: a one-shot backup or another daemon thread
            _settle(catalog, storage, record, record.path, reaped)
            run.discard()
    return reaped


def _settle(
    catalog: Catalog, storage: Storage, record: BackupRecord, path: str, reaped: Reaped
) -> None:
    """A dead run's row, by what it left: complete from its manifest, else interrupted (and
    its published artifact, not a backup without a manifest, removed)."""
    name = PurePosixPath(path).name
    folder = storage.target_dir(record.target)
    manifest, artifact = folder / manifest_name(name), folder / name
    if manifest.exists():
        try:
            data = storage.read_manifest(manifest)
            if data.get("id") == record.id:
                catalog.upsert_from_manifest(data, path=name, where=str(manifest))
                reaped.completed.append(record.id)
                return
        except (BackupError, CatalogError) as exc:
            log.warning("cannot read a dead run's manifest", path=str(manifest), error=str(exc))
    elif artifact.exists() or artifact.is_symlink():
        storage.delete(artifact)
        reaped.orphans.append(artifact)
    _interrupt(catalog, record)
    reaped.interrupted.append(record.id)


def _interrupt(catalog: Catalog, record: BackupRecord) -> None:
    catalog.record_backup_finish(
        record.id,
        status=BackupStatus.INTERRUPTED,
        finished_at=datetime.now(UTC),
        error=record.error or INTERRUPTED_MESSAGE,
    )


def _reap_partial(
    locks: BackupLocks, storage: Storage, path: Path, name: str, record: BackupRecord | None
) -> bool:
    with locks.try_run(name) as run:
        if not run.held:
            return False  # a live backup run is writing it
        if record is not None:
            with locks.try_exclusive(record.id) as backup:
                if not backup.held:
                    return False  # a restore's spool, or a deletion in progress
                storage.remove_partial(path)
        else:
            storage.remove_partial(path)
        run.discard()
    return True


def log_reaped(reaped: Reaped) -> None:
    """Log what :func:`reap_dead_runs` did, one warning per partial and one for the rows."""
    for path in reaped.partials:
        log.warning("removed a partial file left by a dead run", path=str(path))
    for path in reaped.orphans:
        log.warning("removed an artifact a dead run published without a manifest", path=str(path))
    if reaped.completed:
        log.warning(
            "recorded backups that dead runs completed",
            backups=[i[:8] for i in reaped.completed],
        )
    if reaped.interrupted:
        log.warning(
            "marked runs of dead processes interrupted",
            count=len(reaped.interrupted),
            backups=[i[:8] for i in reaped.interrupted],
        )
