"""Remote retention (:func:`pgwarden.retention.remote.prune_remote`) against a real moto_server."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta

import pytest

from pgwarden.config.offsite import OffsiteRetention
from pgwarden.retention.remote import RemotePruneOutcome, prune_remote
from pgwarden.storage.s3 import S3ObjectStore
from tests.s3server import S3Server

TARGET = "app"
NOW = datetime.now(UTC) + timedelta(days=2)  # objects written now are 2 days old "now"


class Remote:
    """Copies written the way the off-site upload lays them out."""

    def __init__(self, store: S3ObjectStore) -> None:
        self.store = store
        self.ids: dict[int, str] = {}  # age in days -> backup id

    def copy(
        self,
        days: float,
        *,
        tags: tuple[str, ...] = (),
        pinned: bool | None = None,
        verified: bool = False,
        encrypted: bool = False,
        size: int = 100,
        target: str = TARGET,
    ) -> str:
        backup_id = secrets.token_hex(16)
        started = NOW - timedelta(days=days)
        name = f"{started:%Y%m%dT%H%M%SZ}-{backup_id[:8]}.dump"
        obj = f"{target}/{name}" + (".age" if encrypted else "")
        manifest: dict[str, object] = {
            "id": backup_id,
            "target": target,
            "database": "appdb",
            "started_at": started.isoformat(),
            "finished_at": (started + timedelta(minutes=1)).isoformat(),
            "tags": list(tags),
            "offsite": {"destination": "moto", "object": obj, "object_size": size},
        }
        if pinned is not None:
            manifest["pinned"] = pinned
        if verified:
            manifest["verify_status"] = "passed"
            manifest["verified_at"] = (started + timedelta(hours=1)).isoformat()
        self.store.put_small(obj, b"x" * size)
        self.store.put_small(f"{target}/{name}.manifest.json", json.dumps(manifest).encode())
        self.ids[int(days)] = backup_id
        return backup_id

    def listing(self) -> list[str]:
        return [info.key for info in self.store.list()]


@pytest.fixture
def remote(s3_server: S3Server, s3_bucket: str) -> Remote:
    return Remote(S3ObjectStore(s3_server.offsite_config(s3_bucket, prefix="vps1/")))


def run(
    remote: Remote,
    policy: OffsiteRetention,
    *,
    pinned: set[str] | None = None,
    verified: set[str] | None = None,
    dry_run: bool = False,
    now: datetime = NOW,
) -> RemotePruneOutcome:
    return prune_remote(
        remote.store,
        "moto",
        TARGET,
        policy,
        now=now,
        pinned=pinned or set(),
        verified=verified or set(),
        dry_run=dry_run,
    )


def test_expired_copies_go_object_and_manifest_and_the_inventory_adds_up(
    remote: Remote,
) -> None:
    for days in (0, 10, 40, 50):
        remote.copy(days, encrypted=days == 40, size=1000 + days)
    outcome = run(remote, OffsiteRetention(keep_days=30, min_keep=1))
    assert outcome.ok, outcome.errors
    assert set(outcome.deleted) == {remote.ids[40], remote.ids[50]}
    assert set(outcome.kept) == {remote.ids[0], remote.ids[10]}
    assert not any(remote.ids[40][:8] in k or remote.ids[50][:8] in k for k in remote.listing())
    assert len(remote.listing()) == 4  # two copies, each object + manifest
    inventory = outcome.inventory
    assert inventory is not None
    assert (inventory.destination, inventory.target, inventory.copies) == ("moto", TARGET, 2)
    assert inventory.stored_bytes == sum(i.size for i in remote.store.list(f"{TARGET}/"))
    assert inventory.newest_started == NOW
    assert inventory.oldest_started == NOW - timedelta(days=10)
    again = run(remote, OffsiteRetention(keep_days=30, min_keep=1))
    assert again.deleted == () and again.inventory == inventory


def test_min_keep_holds_however_old_the_copies(remote: Remote) -> None:
    for days in (40, 50, 60, 70):
        remote.copy(days)
    outcome = run(remote, OffsiteRetention(keep_days=7, min_keep=2))
    assert set(outcome.kept) == {remote.ids[40], remote.ids[50]}
    assert set(outcome.deleted) == {remote.ids[60], remote.ids[70]}


def test_the_newest_verified_copy_is_never_deleted(remote: Remote) -> None:
    for days in (1, 40, 50, 60):
        remote.copy(days, verified=days == 60)
    # the manifest says 60 passed; the catalog knows 50 passed since: the newest verified wins
    outcome = run(remote, OffsiteRetention(keep_days=7, min_keep=1), verified={remote.ids[50]})
    assert set(outcome.kept) == {remote.ids[1], remote.ids[50]}
    assert set(outcome.deleted) == {remote.ids[40], remote.ids[60]}
    only_manifest = run(remote, OffsiteRetention(keep_days=7, min_keep=1))
    assert remote.ids[50] in only_manifest.deleted  # nobody says 50 passed any more


def test_pins_from_the_catalog_and_from_the_manifest_are_respected(remote: Remote) -> None:
    for days in (1, 40, 50, 60):
        remote.copy(days, pinned=True if days == 60 else None)
    outcome = run(remote, OffsiteRetention(keep_days=7, min_keep=1), pinned={remote.ids[40]})
    assert set(outcome.kept) == {remote.ids[1], remote.ids[40], remote.ids[60]}
    assert outcome.deleted == (remote.ids[50],)


def test_pre_migration_copies_live_at_least_seven_days(remote: Remote) -> None:
    remote.copy(0)
    remote.copy(2)
    remote.copy(3, tags=("pre-migration",))
    remote.copy(8, tags=("pre-migration",))
    outcome = run(remote, OffsiteRetention(keep_days=1, min_keep=1))
    assert set(outcome.kept) == {remote.ids[0], remote.ids[3]}
    assert set(outcome.deleted) == {remote.ids[2], remote.ids[8]}


def test_dry_run_deletes_nothing(remote: Remote) -> None:
    for days in (0, 40, 50):
        remote.copy(days)
    before = remote.listing()
    outcome = run(remote, OffsiteRetention(keep_days=30, min_keep=1), dry_run=True)
    assert outcome.dry_run
    assert set(outcome.deleted) == {remote.ids[40], remote.ids[50]}
    assert remote.listing() == before
    assert outcome.inventory is not None and outcome.inventory.copies == 3


def test_orphans_are_removed_after_a_day_and_bad_manifests_kept(
    remote: Remote, s3_server: S3Server, s3_bucket: str
) -> None:
    kept = remote.copy(0)
    remote.store.put_small(f"{TARGET}/20260101T000000Z-deadbeef.dump", b"no manifest")
    gone = remote.copy(1)
    (gone_object,) = [k for k in remote.listing() if gone[:8] in k and "manifest" not in k]
    remote.store.delete(gone_object)  # a deletion interrupted between object and manifest
    remote.store.put_small(f"{TARGET}/20260102T000000Z-0badf00d.dump", b"x")
    remote.store.put_small(f"{TARGET}/20260102T000000Z-0badf00d.dump.manifest.json", b"{not json")
    young = run(remote, OffsiteRetention(keep_days=30, min_keep=1), now=datetime.now(UTC))
    assert f"{TARGET}/20260101T000000Z-deadbeef.dump" in remote.listing()  # may be finishing
    assert young.orphans == (f"{gone_object}.manifest.json",)  # a lone manifest: at once
    outcome = run(remote, OffsiteRetention(keep_days=30, min_keep=1))
    assert f"{TARGET}/20260101T000000Z-deadbeef.dump" not in remote.listing()
    assert not any(gone[:8] in k for k in remote.listing())
    assert outcome.kept == (kept,)
    (error,) = outcome.errors
    assert "0badf00d.dump.manifest.json" in error and "not valid JSON" in error
    assert f"{TARGET}/20260102T000000Z-0badf00d.dump" in remote.listing()  # its copy is kept
    assert s3_server.client().list_objects_v2(Bucket=s3_bucket)["KeyCount"] == 4


def test_an_unreachable_destination_is_an_error_without_inventory(
    s3_server: S3Server,
) -> None:
    store = S3ObjectStore(s3_server.offsite_config("no-such-bucket-pgw"))
    outcome = prune_remote(
        store, "moto", TARGET, OffsiteRetention(), now=NOW, pinned=set(), verified=set()
    )
    assert not outcome.ok
    assert outcome.inventory is None
    assert "NoSuchBucket" in outcome.errors[0]
