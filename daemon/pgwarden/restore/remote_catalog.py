"""``pgwarden catalog rebuild`` from the off-site copies: the bucket holds the truth too.

For every ``[[offsite]]`` destination and every configured target that uses it, the remote
manifests under ``<target>/`` are read (they are never encrypted, so no identity is needed).
Each one whose object is in the bucket, at the size its manifest says, is a confirmed copy:

- a backup the catalog does not know becomes a row with the manifest's facts, ``deleted``
  (its file is not in the local storage: that is what ``deleted`` says of every backup
  retention removed locally while its copy stays off-site) -- so a rebuild on a new machine,
  with an empty state directory and an empty local storage, lists every off-site backup;
- a backup the catalog knows (local or not) keeps its row as it is;
- in both cases its ``offsite_copies`` row becomes ``confirmed`` (:func:`record_copy`).

A copy the catalog lists as confirmed whose manifest is gone from the bucket becomes
``deleted``, unless the bucket holds nothing at all for the target (a wrong prefix or bucket
looks like that): those rows are kept and a problem is reported.  Manifests without their
object, and unreadable ones, are reported, never deleted.  Running it twice changes nothing
the second time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pgwarden.archive.encrypt import AGE_SUFFIX
from pgwarden.catalog import Catalog, read_manifest_facts
from pgwarden.catalog.offsite import copies, record_copy
from pgwarden.catalog.states import CopyState
from pgwarden.config import Config, OffsiteConfig
from pgwarden.errors import NotFoundError, PgwardenError
from pgwarden.redaction import redact
from pgwarden.restore.fetch import json_object, read_offsite_facts
from pgwarden.storage import MANIFEST_SUFFIX, open_object_store
from pgwarden.storage.objects import ObjectInfo, ObjectStore


@dataclass
class RemoteRebuild:
    """What the rebuild found on one destination."""

    destination: str
    location: str = ""
    manifests: int = 0
    added: list[str] = field(default_factory=list)  # backups new to the catalog (off-site only)
    confirmed: list[str] = field(default_factory=list)  # copies recorded as confirmed
    gone: list[str] = field(default_factory=list)  # confirmed copies no longer in the bucket
    problems: list[str] = field(default_factory=list)
    error: str | None = None  # the destination could not be read at all

    @property
    def ok(self) -> bool:
        return self.error is None and not self.problems

    def text(self) -> str:
        """For ``pgwarden catalog rebuild``'s output."""
        if self.error is not None:
            return f"off-site {self.destination}: cannot be read: {self.error}"
        lines = [
            f"off-site {self.destination} ({self.location}): {self.manifests} manifests, "
            f"{len(self.confirmed)} copies confirmed, {len(self.added)} backups added "
            f"(off-site only), {len(self.gone)} copies gone from the bucket"
        ]
        lines += [f"  problem: {p}" for p in self.problems]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "location": self.location,
            "manifests": self.manifests,
            "added": self.added,
            "confirmed": self.confirmed,
            "gone": self.gone,
            "problems": self.problems,
            "error": self.error,
            "ok": self.ok,
        }


def _known(catalog: Catalog, backup_id: str) -> bool:
    try:
        catalog.get_backup(backup_id)
    except NotFoundError:
        return False
    return True


def _index_copy(
    catalog: Catalog,
    store: ObjectStore,
    report: RemoteRebuild,
    target: str,
    key: str,
    objects: dict[str, ObjectInfo],
) -> str | None:
    """Index one remote manifest; the backup id of its confirmed copy, or ``None``."""
    where = f"{report.destination}:{key}"
    data = json_object(store.get_small(key), where)
    facts = read_manifest_facts(data, where)
    offsite = read_offsite_facts(data, where)
    if facts.target != target:
        raise PgwardenError(f"{where}: says target {facts.target!r} but lies under {target}/")
    stored = objects.get(offsite.key)
    if stored is None or stored.size != offsite.size:
        found = "missing" if stored is None else f"{stored.size} bytes"
        report.problems.append(
            f"{where}: its object {offsite.key} is {found} (manifest: {offsite.size} bytes); "
            "not counted as a copy"
        )
        return None
    if not _known(catalog, facts.id):
        name = key[len(target) + 1 :].removesuffix(MANIFEST_SUFFIX)
        catalog.upsert_from_manifest(data, path=name, where=where)
        catalog.mark_deleted(facts.id)  # complete off-site, not in the local storage
        report.added.append(facts.id)
    record_copy(
        catalog,
        backup_id=facts.id,
        destination=report.destination,
        key=offsite.key,
        state=CopyState.CONFIRMED,
        size_bytes=offsite.size,
        object_sha256=offsite.sha256,
        encrypted=offsite.encrypted,
        uploaded_at=stored.modified,
    )
    report.confirmed.append(facts.id)
    return facts.id


def _rebuild_target(
    catalog: Catalog, store: ObjectStore, report: RemoteRebuild, target: str
) -> None:
    # only what pgwarden writes directly under <target>/ (a deeper key: another host's prefix)
    objects = {i.key: i for i in store.list(f"{target}/") if "/" not in i.key[len(target) + 1 :]}
    present: set[str] = set()
    unread: set[str] = set()  # manifests there but not indexed: their copies are not "gone"
    for key in sorted(k for k in objects if k.endswith(MANIFEST_SUFFIX)):
        report.manifests += 1
        try:
            backup_id = _index_copy(catalog, store, report, target, key, objects)
        except PgwardenError as exc:
            report.problems.append(f"{redact(str(exc))} -- not indexed")
            unread.add(key)
            continue
        if backup_id is not None:
            present.add(backup_id)
    listed = copies(
        catalog, target=target, destination=report.destination, states=(CopyState.CONFIRMED,)
    )
    absent = [
        c
        for c in listed
        if c.backup_id not in present
        and c.key.removesuffix(AGE_SUFFIX) + MANIFEST_SUFFIX not in unread
    ]
    if absent and not objects:
        report.problems.append(
            f"{report.location} holds nothing for target {target} (wrong bucket or prefix?): "
            f"its {len(absent)} confirmed copies in the catalog are left as they are"
        )
        return
    for copy in absent:
        record_copy(
            catalog,
            backup_id=copy.backup_id,
            destination=copy.destination,
            key=copy.key,
            state=CopyState.DELETED,
            size_bytes=copy.size_bytes,
            object_sha256=copy.object_sha256,
            encrypted=copy.encrypted,
            uploaded_at=copy.uploaded_at,
        )
        report.gone.append(copy.backup_id)


def rebuild_destination(
    catalog: Catalog, store: ObjectStore, destination: str, targets: list[str]
) -> RemoteRebuild:
    """Index what ``store`` holds for ``targets`` (module docstring)."""
    report = RemoteRebuild(destination, store.location)
    for target in targets:
        try:
            _rebuild_target(catalog, store, report, target)
        except PgwardenError as exc:  # the listing failed: this destination cannot be read
            report.error = redact(str(exc))
            break
    return report


def rebuild_from_offsite(
    config: Config,
    catalog: Catalog,
    opener: Callable[[OffsiteConfig], ObjectStore] = open_object_store,
) -> list[RemoteRebuild]:
    """One :class:`RemoteRebuild` per configured destination, in config order."""
    reports = []
    for offsite in config.offsite:
        targets = [t.name for t in config.targets if offsite in config.offsite_for(t)]
        try:
            store = opener(offsite)
        except PgwardenError as exc:
            reports.append(RemoteRebuild(offsite.name, error=redact(str(exc))))
            continue
        reports.append(rebuild_destination(catalog, store, offsite.name, targets))
    return reports
