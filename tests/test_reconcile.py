"""Catalog and storage in agreement: problems found on real files, the catalog rebuilt from them."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from typing import Any

from pgwarden.catalog import BackupRecord
from pgwarden.retention.reconcile import find_problems, rebuild_catalog
from pgwarden.storage import backup_name, manifest_name
from tests.test_retention_support import Store, StoreFactory, days, new_store, source_db

__all__ = ["new_store", "source_db"]  # the fixtures, imported for pytest


def listing(store: Store) -> list[tuple[Any, ...]]:
    return [
        (
            r.id,
            r.target,
            r.started_at,
            r.finished_at,
            r.status,
            r.pinned,
            r.tags,
            r.path,
            r.size_bytes,
            r.sha256,
            r.format,
            r.compression,
        )
        for r in store.env.catalog.list_backups(statuses=("complete",))
    ]


def test_catalog_rebuild_after_losing_the_catalog_restores_the_listing(
    new_store: StoreFactory,
) -> None:
    store = new_store(keep_days=7, min_keep=3)
    backups = [store.backup(days(age)) for age in (1, 3, 5)]
    store.backup(days(2), tags=("manual", "pre-migration"))
    store.backup(days(4), target="other")
    store.failed_run(days(0.5))
    assert store.cli_json("pin", "app", backups[2].id)["backup"]["pinned"] is True
    before = listing(store)
    assert len(before) == 5
    assert find_problems(store.env.catalog, store.storage) == []

    store.env.catalog.close()
    state_dir = store.config.daemon.state_dir
    for name in ("catalog.db", "catalog.db-wal", "catalog.db-shm"):
        (state_dir / name).unlink(missing_ok=True)
    code, text = store.cli("catalog", "rebuild")
    assert code == 0, text
    assert "from 5 manifests" in text
    assert "5 backups added, 0 refreshed, 0 marked deleted" in text
    store.reopen_catalog()
    assert listing(store) == before
    assert store.record(backups[2].id).pinned
    # the failed run lived only in the catalog: its history is gone, nothing else
    assert {r.status for r in store.env.catalog.list_backups()} == {"complete"}
    code, text = store.cli("backups", "app")
    assert code == 0
    assert all(b.id[:8] in text for b in backups)

    again = store.cli_json("catalog", "rebuild")
    assert (len(again["added"]), len(again["refreshed"]), again["marked_deleted"]) == (0, 5, [])
    assert listing(store) == before


def _copy_as_new_backup(store: Store, source: BackupRecord, backup_id: str) -> str:
    """A second, valid backup in storage that the catalog never heard of."""
    assert source.path
    ext = source.path.split(".", 1)[1]
    name = backup_name(datetime.now(UTC) - days(6), backup_id[:8], ext)
    shutil.copyfile(store.artifact(source), store.directory() / name)
    data = json.loads(store.manifest(source).read_text())
    data["id"], data["path"] = backup_id, name
    store.storage.write_manifest_atomic("app", manifest_name(name), json.dumps(data).encode())
    return name


def test_orphans_dangling_manifests_and_vanished_backups_are_found_and_rebuilt(
    new_store: StoreFactory,
) -> None:
    store = new_store(keep_days=30, min_keep=3)
    whole, dangling, vanished, source = (store.backup(days(age)) for age in (1, 2, 3, 4))
    assert whole.path and dangling.path and vanished.path and source.path
    # a file without manifest: a crash between publish and manifest write
    orphan = store.directory() / backup_name(datetime.now(UTC) - days(9), "0badf00d", "dump.zst")
    shutil.copyfile(store.artifact(whole), orphan)
    store.artifact(dangling).unlink()  # manifest without its file
    store.artifact(vanished).unlink()  # catalog row without either
    store.manifest(vanished).unlink()
    foreign_id = "f" * 32
    foreign = _copy_as_new_backup(store, source, foreign_id)  # a backup the catalog lacks
    damaged = backup_name(datetime.now(UTC) - days(7), "d00dd00d", "dump.zst")
    shutil.copyfile(store.artifact(source), store.directory() / damaged)
    (store.directory() / manifest_name(damaged)).write_text("{ not json")

    problems = find_problems(store.env.catalog, store.storage)
    kinds = sorted(p.kind for p in problems)
    assert kinds == [
        "manifest_without_artifact",
        "missing_backup",
        "not_in_catalog",
        "orphan_file",
        "unreadable_manifest",
    ]
    by_kind = {p.kind: p for p in problems}
    assert str(orphan) in by_kind["orphan_file"].message
    assert by_kind["orphan_file"].severity == "warning"
    assert str(store.manifest(dangling)) in by_kind["manifest_without_artifact"].message
    assert by_kind["missing_backup"].backup_id == vanished.id
    assert "neither its file nor its manifest" in by_kind["missing_backup"].message
    assert by_kind["not_in_catalog"].backup_id == foreign_id
    assert manifest_name(damaged) in by_kind["unreadable_manifest"].message
    assert all(p.target == "app" and p.message for p in problems)
    assert find_problems(store.env.catalog, store.storage, "other") == []

    report = rebuild_catalog(store.env.catalog, store.storage)
    assert report.added == [foreign_id]
    assert sorted(report.marked_deleted) == sorted([dangling.id, vanished.id])
    assert not report.ok  # the damaged manifest could not be indexed
    assert sorted(p.kind for p in report.problems) == [
        "manifest_without_artifact",
        "orphan_file",
        "unreadable_manifest",
    ]
    statuses = store.statuses()
    assert statuses[foreign_id] == "complete"
    assert (statuses[dangling.id], statuses[vanished.id]) == ("deleted", "deleted")
    assert (statuses[whole.id], statuses[source.id]) == ("complete", "complete")
    # rebuild deletes no file: what it cannot repair stays reported
    assert orphan.exists()
    assert (store.directory() / foreign).exists()
    left = sorted(p.kind for p in find_problems(store.env.catalog, store.storage))
    assert left == ["manifest_without_artifact", "orphan_file", "unreadable_manifest"]
    code, text = store.cli("catalog", "rebuild")
    assert code == 1
    assert "error: " in text
    assert str(orphan) in text


def test_rebuild_leaves_rows_alone_when_storage_holds_nothing_for_a_target(
    new_store: StoreFactory,
) -> None:
    """An unmounted backup disk must not turn the whole catalog into 'deleted'."""
    store = new_store()
    kept = [store.backup(days(age)) for age in (1, 2)]
    moved = store.workdir / "app-unmounted"
    store.directory().rename(moved)
    try:
        report = rebuild_catalog(store.env.catalog, store.storage)
        assert report.marked_deleted == []
        assert [p.kind for p in report.problems] == ["no_storage"]
        assert "is it mounted?" in report.problems[0].message
        assert all(store.record(b.id).status == "complete" for b in kept)
        missing = find_problems(store.env.catalog, store.storage, "app")
        assert sorted(p.backup_id or "" for p in missing) == sorted(b.id for b in kept)
    finally:
        moved.rename(store.directory())
    assert find_problems(store.env.catalog, store.storage) == []
