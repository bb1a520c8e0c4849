"""The off-site job of one target: upload what is missing, prune each destination, take stock.

``backup`` and ``retention`` are independent siblings, so their composition lives here:
:func:`run_offsite` calls :func:`pgwarden.backup.offsite_run.upload_pending` (every complete local
backup not yet confirmed on a destination, newest first), then
:func:`pgwarden.retention.remote.prune_remote` per reachable destination (its own policy, pins
and verified backups from the catalog), and returns an :class:`OffsiteJobOutcome`.  The daemon
runs it as the job kind ``offsite`` (a follow-up of every successful backup, before the local
prune; ``ctl offsite TARGET``); ``pgwarden offsite sync`` runs the same function without a
daemon.  A failure fails the job (:class:`OffsiteFailed`, its message naming each destination
and cause, the outcome attached) and never touches a local backup.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from threading import Event
from typing import Any

from pgwarden import logsetup
from pgwarden.backup.offsite import UploadOutcome, object_key
from pgwarden.backup.offsite_run import upload_pending
from pgwarden.catalog import INTERRUPTED_MESSAGE, BackupStatus, Catalog, DrillStatus
from pgwarden.catalog.offsite import CopyState, mark_interrupted, pending_backups, record_copy
from pgwarden.config import Config, RetentionSettings, TargetConfig
from pgwarden.config.offsite import OffsiteConfig
from pgwarden.errors import OffsiteError, PgwardenError, describe
from pgwarden.retention.plan import plan
from pgwarden.retention.remote import RemotePruneOutcome, prune_remote
from pgwarden.storage import Storage, open_object_store
from pgwarden.storage.locks import BackupLocks
from pgwarden.storage.objects import ObjectStore

log = logsetup.get_logger("pgwarden.offsite")

#: how long a run waits for another process's run of the same target
RUN_LOCK_TIMEOUT_S = 5.0
#: the daemon's retry of copies a failed run left pending (a run with nothing pending is a
#: no-op without any S3 request); every backup is followed by a run of its own anyway
OFFSITE_RETRY_SCHEDULE = "41 * * * *"

StoreOpener = Callable[[OffsiteConfig], ObjectStore]


@dataclass(frozen=True)
class OffsiteJobOutcome:
    """What one off-site run of a target did: the uploads, then each destination's prune."""

    target: str
    uploads: UploadOutcome
    prunes: tuple[RemotePruneOutcome, ...] = ()

    @property
    def ok(self) -> bool:
        return self.uploads.ok and all(p.ok for p in self.prunes)

    @property
    def destinations(self) -> tuple[str, ...]:
        """Every destination the run was about, in config order as met."""
        seen: dict[str, None] = {}
        for name in (
            *(c.destination for c in self.uploads.copies),
            *self.uploads.unreachable,
            *(p.destination for p in self.prunes),
        ):
            seen.setdefault(name, None)
        return tuple(seen)

    def as_dict(self) -> dict[str, Any]:
        """The socket's and ``--json``'s form (JSON values only, nothing secret in it)."""
        return {
            "target": self.target,
            "ok": self.ok,
            "copies": [asdict(c) for c in self.uploads.copies],
            "uploaded": sum(1 for c in self.uploads.copies if c.ok),
            "uploaded_bytes": self.uploads.uploaded_bytes,
            "unreachable": list(self.uploads.unreachable),
            "prunes": [_prune_dict(p) for p in self.prunes],
            "problems": list(self.problems()),
        }

    def problems(self) -> tuple[str, ...]:
        """One line per failure, each naming its destination (already redacted)."""
        lines = list(self.uploads.reasons) or [
            f"{name}: unreachable" for name in self.uploads.unreachable
        ]
        lines += [
            f"{c.destination}: upload of {c.backup_id[:8]} failed: {c.error}"
            for c in self.uploads.copies
            if not c.ok
        ]
        lines += [f"{p.destination}: remote prune: {e}" for p in self.prunes for e in p.errors]
        return tuple(lines)


def _prune_dict(prune: RemotePruneOutcome) -> dict[str, Any]:
    inventory = prune.inventory
    return {
        "destination": prune.destination,
        "deleted": list(prune.deleted),
        "kept": len(prune.kept),
        "errors": list(prune.errors),
        "dry_run": prune.dry_run,
        "inventory": None
        if inventory is None
        else {
            "copies": inventory.copies,
            "stored_bytes": inventory.stored_bytes,
            "oldest_started": _iso(inventory.oldest_started),
            "newest_started": _iso(inventory.newest_started),
        },
    }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


class OffsiteFailed(OffsiteError):
    """The off-site job of a target failed; ``outcome`` says what happened per destination."""

    def __init__(self, outcome: OffsiteJobOutcome) -> None:
        self.outcome = outcome
        detail = "; ".join(outcome.problems()) or "failed"
        super().__init__(f"off-site copies of {outcome.target}: {detail}")


@dataclass(frozen=True)
class OffsiteRun:
    """One off-site run of a target (the daemon's job and ``pgwarden offsite sync``)."""

    target: TargetConfig
    config: Config
    catalog: Catalog
    storage: Storage
    cancel: Event | None = None
    destinations: Collection[str] | None = None  # None: every destination of the target
    progress: Callable[[int], None] | None = None
    open_store: StoreOpener = open_object_store


def run_offsite(run: OffsiteRun) -> OffsiteJobOutcome:
    """Upload what is missing, then prune each reachable destination; never raises for a
    destination's failure (see :attr:`OffsiteJobOutcome.ok`), only for a cancel, or
    :class:`~pgwarden.errors.BusyError` while another process runs the same target's off-site
    run (the daemon's job beside ``pgwarden offsite sync``): one run lock per target."""
    locks = BackupLocks(run.config.daemon.state_dir)
    # a whole-server target's database is "vps1/app": a lock name is one file name
    lock_name = "offsite." + run.target.name.replace("/", "--")
    with locks.run(lock_name, timeout=RUN_LOCK_TIMEOUT_S):
        stale = mark_interrupted(run.catalog, target=run.target.name, error=INTERRUPTED_MESSAGE)
        if stale:
            log.warning(
                "off-site uploads of a dead run marked failed", target=run.target.name, count=stale
            )
        return _run_locked(run)


def _run_locked(run: OffsiteRun) -> OffsiteJobOutcome:
    chosen = [
        d
        for d in run.config.offsite_for(run.target)
        if run.destinations is None or d.name in run.destinations
    ]
    stores: dict[str, ObjectStore] = {}
    unavailable: dict[str, str] = {}
    for destination in chosen:
        try:
            stores[destination.name] = run.open_store(destination)
        except PgwardenError as exc:
            unavailable[destination.name] = describe(exc)
    uploads = upload_pending(
        run.target,
        run.config,
        run.catalog,
        run.storage,
        stores,
        run.cancel,
        destinations=[d.name for d in chosen],
        unavailable=unavailable,
        skip={d.name: doomed(run.catalog, run.target.name, d) for d in chosen},
        progress=run.progress,
    )
    prunes = tuple(
        _prune(run, destination, stores[destination.name])
        for destination in chosen
        if destination.name in stores and destination.name not in uploads.unreachable
    )
    outcome = OffsiteJobOutcome(run.target.name, uploads, prunes)
    log.info(
        "off-site run finished",
        target=run.target.name,
        ok=outcome.ok,
        uploaded=sum(1 for c in uploads.copies if c.ok),
        failed=sum(1 for c in uploads.copies if not c.ok),
        unreachable=list(uploads.unreachable),
        problems=list(outcome.problems()),
    )
    return outcome


def has_pending(run: OffsiteRun) -> bool:
    """Whether any destination of the run misses a complete local backup that its policy
    would keep (the catalog only: no S3 request)."""
    for destination in run.config.offsite_for(run.target):
        if run.destinations is not None and destination.name not in run.destinations:
            continue
        skipped = doomed(run.catalog, run.target.name, destination)
        pending = pending_backups(run.catalog, target=run.target.name, destination=destination.name)
        if any(record.id not in skipped for record in pending):
            return True
    return False


def _prune(run: OffsiteRun, destination: OffsiteConfig, store: ObjectStore) -> RemotePruneOutcome:
    """The destination's own retention, pins and passed drills from the catalog; the copies it
    deleted are recorded ``deleted`` (so they are not uploaded again)."""
    records = run.catalog.list_backups(run.target.name)
    outcome = prune_remote(
        store,
        destination.name,
        run.target.name,
        destination.retention,
        now=datetime.now(UTC),
        pinned={r.id for r in records if r.pinned},
        verified={r.id for r in records if r.verify_status == DrillStatus.PASSED},
        locks=BackupLocks(run.config.daemon.state_dir),  # a restore reading a copy keeps it
    )
    known = {r.id: r for r in records}
    for backup_id in outcome.deleted:
        record = known.get(backup_id)
        if record is None or not record.path:
            continue  # a copy this catalog never knew (another machine's, or rebuilt away)
        try:
            record_copy(
                run.catalog,
                backup_id=backup_id,
                destination=destination.name,
                key=object_key(
                    run.target.name, record.path, encrypted=destination.encryption is not None
                ),
                state=CopyState.DELETED,
                encrypted=destination.encryption is not None,
            )
        except PgwardenError as exc:
            log.error("cannot record a pruned off-site copy", error=describe(exc))
    return outcome


def doomed(catalog: Catalog, target: str, destination: OffsiteConfig) -> frozenset[str]:
    """Local backups the destination's own policy would delete as soon as they arrived: never
    uploaded there (``pgwarden offsite list`` shows them as ``skipped``)."""
    complete = catalog.list_backups(target, statuses=(BackupStatus.COMPLETE,))
    policy = destination.retention
    settings = RetentionSettings(
        keep_days=policy.keep_days,
        min_keep=policy.min_keep,
        keep_daily=policy.keep_daily,
        keep_weekly=policy.keep_weekly,
        keep_monthly=policy.keep_monthly,
        schedule=None,
    )
    return plan(complete, settings, datetime.now(UTC)).delete_ids
