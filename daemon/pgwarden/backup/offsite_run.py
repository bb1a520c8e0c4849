"""One off-site run of a target: every destination gets what it is missing, newest first.

:func:`upload_pending` walks the target's destinations in config order.  For each: multipart
uploads a killed process left open under ``<target>/`` are aborted first (no orphan parts;
failing that, the destination is *unreachable* and the run moves on to the next one), then
every complete local backup not confirmed there (:func:`pgwarden.catalog.offsite.
pending_backups`) is sent with :func:`pgwarden.backup.offsite.upload_backup`, newest first,
except those the caller says the remote policy would delete at once (``skip``).  The first
failed copy ends that destination's turn: the endpoint is likely gone, and the next run
retries from the newest again; a local artifact that fails its manifest's checksum is skipped
(reported) instead, so that one damaged file does not hold back the older copies.  Local
backups are never touched.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from threading import Event

from pgwarden import logsetup
from pgwarden.backup.offsite import (
    CopyRequest,
    CopyResult,
    UploadOutcome,
    object_key,
    upload_backup,
)
from pgwarden.catalog import BackupStatus, Catalog
from pgwarden.catalog.offsite import CopyState, pending_backups, record_copy
from pgwarden.config import Config, TargetConfig
from pgwarden.config.offsite import OffsiteConfig
from pgwarden.errors import PgwardenError, describe
from pgwarden.storage import Storage
from pgwarden.storage.locks import BackupLocks
from pgwarden.storage.objects import ObjectStore

log = logsetup.get_logger("pgwarden.offsite")


def upload_pending(
    target: TargetConfig,
    config: Config,
    catalog: Catalog,
    storage: Storage,
    stores: Mapping[str, ObjectStore],
    cancel: Event | None = None,
    *,
    destinations: Collection[str] | None = None,
    unavailable: Mapping[str, str] | None = None,
    skip: Mapping[str, Collection[str]] | None = None,
    progress: Callable[[int], None] | None = None,
) -> UploadOutcome:
    """Upload every complete local backup of ``target`` missing on each destination.

    ``stores`` maps destination names to their opened stores; ``unavailable`` names those that
    could not even be opened (with the redacted reason): both count as unreachable.
    ``destinations`` limits the run to some of the target's destinations.  ``skip`` maps a
    destination to backup ids not to upload (its policy would delete them at once).
    """
    locks = BackupLocks(config.daemon.state_dir)
    copies: list[CopyResult] = []
    unreachable: list[str] = []
    reasons: list[str] = []
    for destination in config.offsite_for(target):
        if destinations is not None and destination.name not in destinations:
            continue
        store = stores.get(destination.name)
        reason = (unavailable or {}).get(destination.name)
        if store is not None and reason is None:
            reason = _abort_stale(store, target.name)
        if store is None or reason is not None:
            reason = reason or "no object store was opened for it"
            unreachable.append(destination.name)
            reasons.append(f"{destination.name}: {reason}")
            _record_unreachable(catalog, target.name, destination, reason)
            continue
        pending = [
            record
            for record in pending_backups(catalog, target=target.name, destination=destination.name)
            if record.id not in (skip or {}).get(destination.name, ())
        ]
        for record in pending:
            if catalog.get_backup(record.id).status != BackupStatus.COMPLETE:
                continue  # pruned locally since the listing: nothing left to send
            request = CopyRequest(
                record, destination, store, catalog, storage, locks, cancel, progress
            )
            result = upload_backup(request)
            copies.append(result)
            if not result.ok and not result.local_fault:  # a damaged local file: go on
                break
    return UploadOutcome(target.name, tuple(copies), tuple(unreachable), tuple(reasons))


def _abort_stale(store: ObjectStore, target: str) -> str | None:
    """Abort the target's open multipart uploads; the reason when the store cannot be used."""
    try:
        aborted = store.abort_stale_uploads(f"{target}/")
    except (PgwardenError, OSError) as exc:
        return describe(exc)
    if aborted:
        log.info("aborted stale multipart uploads", target=target, count=aborted)
    return None


def _record_unreachable(
    catalog: Catalog, target: str, destination: OffsiteConfig, reason: str
) -> None:
    """The newest pending backup's copy is recorded ``failed`` with why: what ``offsite list``
    and the next run show.  Older pending ones stay as they are."""
    pending = pending_backups(catalog, target=target, destination=destination.name)
    record = pending[0] if pending else None
    if record is None or not record.path:
        return
    encrypted = destination.encryption is not None
    try:
        record_copy(
            catalog,
            backup_id=record.id,
            destination=destination.name,
            key=object_key(target, record.path, encrypted=encrypted),
            state=CopyState.FAILED,
            encrypted=encrypted,
            error=f"unreachable: {reason}",
        )
    except PgwardenError as exc:
        log.error("cannot record the unreachable destination", error=describe(exc))
