"""Retention of off-site copies: the local planner, applied to what a destination holds.

The remote keeps its own policy (``[offsite.retention]``) under the same invariants as the
local store: never the newest verified copy, never below ``min_keep``, pins respected,
``pre-migration`` copies at least 7 days.  An object is deleted before its manifest (a
manifest without object is recognisable; an object without manifest is an orphan), and on a
versioned bucket every version pgwarden created is deleted so the space is really freed.

:func:`prune_remote` lists ``<target>/``, pairs each ``*.manifest.json`` with its object (the
manifest's ``offsite.object``, else ``<name>`` or ``<name>.age``), reads the manifests' facts
(:func:`~pgwarden.catalog.manifest_facts.read_manifest_facts`) and hands them to the one
planner, :func:`pgwarden.retention.plan.plan`.  An object without manifest older than
:data:`ORPHAN_GRACE` is an orphan (a copy whose manifest never arrived) and is deleted, as is
a manifest whose object is gone (a deletion interrupted between the two).  A manifest that
cannot be read keeps its copy and is reported.  Only keys named the way pgwarden names what it
writes, directly under ``<target>/``, are considered: another tool's object there, or another
host's copies under a deeper prefix, are never touched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pgwarden.catalog import BackupStatus, DrillStatus
from pgwarden.catalog.manifest_facts import read_manifest_facts
from pgwarden.config import RetentionSettings
from pgwarden.config.offsite import OffsiteRetention
from pgwarden.errors import CatalogError, OffsiteError, describe
from pgwarden.logsetup import get_logger
from pgwarden.retention.plan import plan
from pgwarden.storage import MANIFEST_SUFFIX, parse_backup_name
from pgwarden.storage.locks import BackupLocks
from pgwarden.storage.objects import ObjectInfo, ObjectStore

#: the suffix of an encrypted object
AGE_SUFFIX = ".age"

log = get_logger("pgwarden.prune")


@dataclass(frozen=True)
class RemoteInventory:
    """What a destination holds for one target after the run."""

    destination: str
    target: str
    copies: int  # complete copies (object + manifest)
    stored_bytes: int  # every object under the target's prefix, manifests included
    oldest_started: datetime | None
    newest_started: datetime | None


@dataclass(frozen=True)
class RemotePruneOutcome:
    destination: str
    target: str
    deleted: tuple[str, ...]  # backup ids
    kept: tuple[str, ...]
    errors: tuple[str, ...]  # redacted
    inventory: RemoteInventory | None
    dry_run: bool = False
    orphans: tuple[str, ...] = ()  # keys removed: objects without manifest, and the reverse

    @property
    def ok(self) -> bool:
        return not self.errors


#: an object without manifest younger than this may be an upload still finishing
ORPHAN_GRACE = timedelta(days=1)


@dataclass(frozen=True)
class _Copy:
    """One remote copy as the planner reads it (a :class:`~.plan.BackupLike`)."""

    id: str
    started_at: datetime
    tags: tuple[str, ...]
    pinned: bool
    verify_status: str | None
    verified_at: datetime | None
    manifest_key: str
    object_key: str
    size: int
    manifest_size: int
    status: str = BackupStatus.COMPLETE


@dataclass
class _Holdings:
    """What the listing found under ``<target>/``."""

    copies: list[_Copy] = field(default_factory=list)
    orphans: list[ObjectInfo] = field(default_factory=list)  # deletable leftovers
    errors: list[str] = field(default_factory=list)
    total_bytes: int = 0


def prune_remote(
    store: ObjectStore,
    destination: str,
    target: str,
    policy: OffsiteRetention,
    *,
    now: datetime,
    pinned: set[str],
    verified: set[str],
    dry_run: bool = False,
    locks: BackupLocks | None = None,
) -> RemotePruneOutcome:
    """Apply ``policy`` to the copies ``store`` holds for ``target`` and report what is left.

    ``pinned`` and ``verified`` are backup ids the local catalog knows as pinned and as
    drilled successfully (a remote manifest is frozen at upload time; its own ``pinned`` and
    verification facts count too).  A listing failure gives an outcome with the error and no
    inventory; a failed deletion is reported and the copy stays in the inventory.  With
    ``locks``, a copy whose backup lock is held (a restore or a drill reading it) is kept this
    time, as the local prune keeps a backup in use.
    """
    try:
        found = _scan(store, target, now, pinned, verified)
    except OffsiteError as exc:
        return RemotePruneOutcome(destination, target, (), (), (describe(exc),), None, dry_run)
    settings = RetentionSettings(
        keep_days=policy.keep_days,
        min_keep=policy.min_keep,
        keep_daily=policy.keep_daily,
        keep_weekly=policy.keep_weekly,
        keep_monthly=policy.keep_monthly,
        schedule=None,
    )
    decided = plan(found.copies, settings, now)
    errors = list(found.errors)
    expired = [c for c in found.copies if not decided.decision(c.id).keep]
    deleted = _delete_copies(store, expired, dry_run, errors, locks)
    removed = _remove_orphans(store, found.orphans, dry_run, errors)
    gone = [] if dry_run else deleted
    freed = sum(c.size + c.manifest_size for c in gone) + sum(o.size for o in removed)
    left = [c for c in found.copies if c not in gone]
    inventory = RemoteInventory(
        destination=destination,
        target=target,
        copies=len(left),
        stored_bytes=found.total_bytes - (0 if dry_run else freed),
        oldest_started=min((c.started_at for c in left), default=None),
        newest_started=max((c.started_at for c in left), default=None),
    )
    return RemotePruneOutcome(
        destination,
        target,
        tuple(c.id for c in deleted),
        tuple(c.id for c in found.copies if c not in deleted),
        tuple(errors),
        inventory,
        dry_run,
        orphans=tuple(o.key for o in removed),
    )


def _delete_copies(
    store: ObjectStore,
    expired: list[_Copy],
    dry_run: bool,
    errors: list[str],
    locks: BackupLocks | None,
) -> list[_Copy]:
    """Delete each copy, its object first (a lone manifest is recognisable); those deleted
    (in a dry run: those that would be).  A copy in use (its lock held) is kept."""
    deleted: list[_Copy] = []
    for copy in expired:
        if not dry_run:
            try:
                if not _delete_copy(store, copy, locks):
                    log.info("offsite_prune_in_use", location=store.location, backup_id=copy.id)
                    continue
            except OffsiteError as exc:
                errors.append(f"{copy.id}: {describe(exc)}")
                log.error(
                    "offsite_prune_failed",
                    location=store.location,
                    key=copy.object_key,
                    error=describe(exc),
                )
                continue
            log.info(
                "offsite_pruned", location=store.location, key=copy.object_key, backup_id=copy.id
            )
        deleted.append(copy)
    return deleted


def _delete_copy(store: ObjectStore, copy: _Copy, locks: BackupLocks | None) -> bool:
    """Delete one copy under the backup's exclusive lock (when ``locks``); False: in use."""
    if locks is None:
        store.delete(copy.object_key)
        store.delete(copy.manifest_key)
        return True
    try:
        with locks.try_exclusive(copy.id) as lock:
            if not lock.held:
                return False
            store.delete(copy.object_key)
            store.delete(copy.manifest_key)
            lock.discard()  # no file left per pruned copy (a later locker makes a new one)
    except OSError as exc:  # the lock directory: this copy stays, the rest go on
        raise OffsiteError(f"cannot lock backup {copy.id[:8]}: {exc.strerror or exc}") from exc
    return True


def _scan(
    store: ObjectStore, target: str, now: datetime, pinned: set[str], verified: set[str]
) -> _Holdings:
    """List ``<target>/``, pair manifests with their objects and read the manifests' facts."""
    listed = {info.key: info for info in store.list(f"{target}/") if _ours(info.key, target)}
    found = _Holdings(total_bytes=sum(info.size for info in listed.values()))
    paired: set[str] = set()
    for key, info in listed.items():
        if not key.endswith(MANIFEST_SUFFIX):
            continue
        paired.add(key)
        try:
            copy = _read_copy(store, info, listed, target, pinned, verified)
        except (OffsiteError, CatalogError) as exc:
            found.errors.append(f"{describe(exc)} (copy kept)")
            paired.update(_object_candidates(key))
            continue
        if copy is None:  # the object is gone: an interrupted deletion
            found.orphans.append(info)
            continue
        paired.add(copy.object_key)
        found.copies.append(copy)
    for key, info in listed.items():
        if key not in paired and info.modified < now - ORPHAN_GRACE:
            found.orphans.append(info)
    return found


def _ours(key: str, target: str) -> bool:
    """Whether ``key`` is named as pgwarden names what it writes under ``<target>/``: an
    artifact ``<stamp>-<id>.<ext>[.age]`` or its manifest, directly there.  Anything else (another
    tool's file, another host's copies under a deeper prefix) is never read, counted or deleted."""
    name = key.removeprefix(f"{target}/")
    if "/" in name:
        return False
    return (
        parse_backup_name(name.removesuffix(MANIFEST_SUFFIX).removesuffix(AGE_SUFFIX)) is not None
    )


def _object_candidates(manifest_key: str) -> tuple[str, str]:
    base = manifest_key.removesuffix(MANIFEST_SUFFIX)
    return base, base + AGE_SUFFIX


def _read_copy(
    store: ObjectStore,
    info: ObjectInfo,
    listed: dict[str, ObjectInfo],
    target: str,
    pinned: set[str],
    verified: set[str],
) -> _Copy | None:
    """The copy a manifest describes, or ``None`` when its object is not there."""
    where = f"{store.location}/{info.key}"
    try:
        data = json.loads(store.get_small(info.key))
    except json.JSONDecodeError as exc:
        raise CatalogError(f"{where}: not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise CatalogError(f"{where}: not a JSON object")
    facts = read_manifest_facts(data, where)
    if facts.target != target:
        raise CatalogError(f"{where}: a manifest of target {facts.target!r} under {target}/")
    offsite = data.get("offsite")
    named = offsite.get("object") if isinstance(offsite, dict) else None
    candidates = (named,) if isinstance(named, str) else _object_candidates(info.key)
    obj = next((listed[k] for k in candidates if k in listed and k != info.key), None)
    if obj is None:
        return None
    passed = facts.id in verified or facts.verify_status == DrillStatus.PASSED
    return _Copy(
        id=facts.id,
        started_at=facts.started_at,
        tags=facts.tags,
        pinned=bool(facts.pinned) or facts.id in pinned,
        verify_status=DrillStatus.PASSED if passed else None,
        verified_at=facts.verified_at if passed else None,
        manifest_key=info.key,
        object_key=obj.key,
        size=obj.size,
        manifest_size=info.size,
    )


def _remove_orphans(
    store: ObjectStore, orphans: list[ObjectInfo], dry_run: bool, errors: list[str]
) -> list[ObjectInfo]:
    """Delete objects without manifest (older than a day) and manifests without object."""
    removed: list[ObjectInfo] = []
    for orphan in orphans:
        if not dry_run:
            try:
                store.delete(orphan.key)
            except OffsiteError as exc:
                errors.append(f"{orphan.key}: {describe(exc)}")
                continue
            log.info("offsite_orphan_removed", location=store.location, key=orphan.key)
        removed.append(orphan)
    return removed
