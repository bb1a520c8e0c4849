"""Where a restore or a drill reads a backup from: the local storage or an off-site copy.

:func:`open_source` resolves ``TARGET [BACKUP]`` the way ``pgwarden restore`` and ``pgwarden
verify`` do.  Without ``--from`` the local file is read when storage holds it; otherwise (a
backup retention removed locally, a new machine whose catalog was rebuilt from the bucket, a
disk that is gone) the copy on the first destination of the target that holds one.  With
``--from DESTINATION`` the copy there is read, whatever the local storage holds.  The newest
backup is the newest complete local one, else the newest with a confirmed off-site copy.

A remote copy is fetched (:func:`pgwarden.restore.fetch.fetched`) under the backup's shared
lock, so retention cannot delete the backup's row or spool meanwhile, and the block gets a
:class:`~pgwarden.restore.locate.Located` whose artifact is the fetched file (``fetched_from``
set); the file is removed when the block ends.  The identity is loaded before anything is
downloaded, and the download happens before the caller connects to any database.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pgwarden.archive.manifest import Manifest
from pgwarden.catalog import BackupStatus, Catalog
from pgwarden.catalog.offsite import copies
from pgwarden.catalog.records import BackupRecord
from pgwarden.catalog.states import CopyState
from pgwarden.config import Config, OffsiteConfig, TargetConfig
from pgwarden.errors import NotFoundError, PgwardenError, UsageError
from pgwarden.redaction import redact
from pgwarden.restore import fetch
from pgwarden.restore.locate import LOCK_TIMEOUT_S, Located, locate
from pgwarden.storage import Storage, manifest_name, open_object_store
from pgwarden.storage.locks import BackupLocks
from pgwarden.storage.objects import ObjectStore

StoreOpener = Callable[[OffsiteConfig], ObjectStore]
#: a backup with one of these statuses was published, so it may have off-site copies
OFFSITE_READABLE = (BackupStatus.COMPLETE, BackupStatus.DELETED)


@dataclass(frozen=True)
class OffsiteChoice:
    """What the command line says about off-site copies (all optional)."""

    destination: str | None = None  # --from
    identity_file: Path | None = None  # --identity
    identity_credential: str | None = None  # --identity-credential


@dataclass(frozen=True)
class Source:
    """What the restore reads: ``located`` (for a remote copy, the fetched file), and the copy."""

    located: Located
    remote: fetch.RemoteCopy | None = None


def _destination(config: Config, target: TargetConfig, name: str) -> OffsiteConfig:
    for offsite in config.offsite_for(target):
        if offsite.name == name:
            return offsite
    known = ", ".join(o.name for o in config.offsite_for(target)) or "none"
    raise UsageError(
        f"--from {name}: not an off-site destination of target {target.name} (its: {known})"
    )


def read_copy(store: ObjectStore, destination: str, record: BackupRecord) -> fetch.RemoteCopy:
    """``record``'s copy on ``store``, its remote manifest read and checked."""
    if not record.path:
        raise NotFoundError(f"backup {record.short_id} has no artifact name in the catalog")
    name = Path(record.path).name
    key = fetch.manifest_key(record.target, name)
    where = f"{destination}:{key}"
    data = fetch.json_object(store.get_small(key), where)
    manifest = Manifest.from_dict(data, where)
    facts = fetch.read_offsite_facts(data, where)
    if manifest.id != record.id:
        raise NotFoundError(f"{where} describes backup {manifest.id[:8]}, not {record.short_id}")
    if manifest.path != name:  # the spool file is named after it: never a path elsewhere
        raise NotFoundError(f"{where} names artifact {manifest.path!r}, not {name!r}")
    return fetch.RemoteCopy(record, manifest, facts, store.location)


def _newest_remote(catalog: Catalog, target: str, names: tuple[str, ...]) -> BackupRecord:
    confirmed = [
        c
        for c in copies(catalog, target=target, states=(CopyState.CONFIRMED,))
        if c.destination in names
    ]
    if not confirmed:
        where = " or ".join(names) or "any destination"
        raise NotFoundError(
            f"target {target!r} has no complete backup, locally or confirmed on {where} "
            "(on a new machine: pgwarden catalog rebuild)"
        )
    newest = max(confirmed, key=lambda c: (c.backup_started_at or c.uploaded_at, c.backup_id))
    return catalog.get_backup(newest.backup_id)


def find_copy(
    config: Config,
    catalog: Catalog,
    target: TargetConfig,
    record: BackupRecord,
    wanted: tuple[OffsiteConfig, ...],
    opener: StoreOpener = open_object_store,
) -> tuple[fetch.RemoteCopy, ObjectStore]:
    """The first destination of ``wanted`` holding ``record`` (those the catalog lists as
    confirmed first); :class:`NotFoundError` listing why each one could not serve it."""
    confirmed = {
        c.destination
        for c in copies(catalog, target=target.name, states=(CopyState.CONFIRMED,))
        if c.backup_id == record.id
    }
    ordered = sorted(wanted, key=lambda o: o.name not in confirmed)
    problems: list[str] = []
    for offsite in ordered:
        try:
            store = opener(offsite)
            return read_copy(store, offsite.name, record), store
        except PgwardenError as exc:
            problems.append(f"{offsite.name}: {redact(str(exc))}")
    tried = "; ".join(problems) or f"target {target.name} has no off-site destination"
    raise NotFoundError(f"backup {record.short_id} cannot be read off-site: {tried}")


def choose(
    config: Config,
    catalog: Catalog,
    storage: Storage,
    target: TargetConfig,
    ref: str | None,
    choice: OffsiteChoice,
    opener: StoreOpener = open_object_store,
) -> Located | tuple[fetch.RemoteCopy, ObjectStore]:
    """The local backup when it is there and no ``--from`` was given, else a remote copy."""
    local_error: PgwardenError | None = None
    if choice.destination is None:
        try:
            return locate(catalog, storage, target.name, ref)
        except (NotFoundError, UsageError) as exc:
            local_error = exc
        wanted = config.offsite_for(target)
        if not wanted:
            raise local_error
    else:
        wanted = (_destination(config, target, choice.destination),)
    names = tuple(o.name for o in wanted)
    record = (
        catalog.get_backup(ref, target.name)
        if ref is not None
        else _newest_remote(catalog, target.name, names)
    )
    if record.status not in OFFSITE_READABLE:  # failed, interrupted, running: never published
        raise local_error or UsageError(
            f"backup {record.short_id} is {record.status}; only complete backups can be restored"
        )
    try:
        return find_copy(config, catalog, target, record, wanted, opener)
    except NotFoundError as exc:
        if local_error is None:
            raise
        raise NotFoundError(f"{local_error}; and {exc}") from exc


@contextmanager
def open_source(
    config: Config,
    catalog: Catalog,
    storage: Storage,
    target: TargetConfig,
    ref: str | None,
    choice: OffsiteChoice,
    *,
    fetch_copy: bool = True,
    cancel: threading.Event | None = None,
    opener: StoreOpener = open_object_store,
) -> Iterator[Source]:
    """The backup to read (module docstring); a remote copy is fetched unless
    ``fetch_copy`` is false (a dry run: the artifact named is where it would be fetched)."""
    found = choose(config, catalog, storage, target, ref, choice, opener)
    if isinstance(found, Located):
        yield Source(found)
        return
    copy, store = found
    spool_dir = storage.target_dir(target.name)
    manifest_path = spool_dir / manifest_name(copy.manifest.path)
    described = copy.describe()
    if not fetch_copy:
        artifact = spool_dir / copy.manifest.path
        yield Source(Located(copy.record, manifest_path, copy.manifest, artifact, described), copy)
        return
    identities = fetch.identities_for(copy, choice.identity_file, choice.identity_credential)
    with (
        BackupLocks(config.daemon.state_dir).shared(copy.record.id, timeout=LOCK_TIMEOUT_S),
        fetch.fetched(copy, store, spool_dir, identities, cancel) as path,
    ):
        yield Source(Located(copy.record, manifest_path, copy.manifest, path, described), copy)
