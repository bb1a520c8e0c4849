"""Prune end to end: real backups whose recorded times spread over weeks, real files, real locks."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pgwarden.catalog import BackupRecord
from pgwarden.config.kinds import JobKind
from pgwarden.errors import BusyError, UsageError
from pgwarden.metrics import Metrics
from pgwarden.retention import plan as retention
from pgwarden.retention.prune import PruneOutcome, prune_target
from pgwarden.retention.reconcile import find_problems, set_pin
from pgwarden.service import jobkinds, outcomes
from pgwarden.service.jobs import Job, JobRunner, JobState
from pgwarden.service.state import ServiceState
from pgwarden.storage import manifest_name
from pgwarden.storage.locks import BackupLocks
from tests.test_retention_support import StoreFactory, days, immutable, new_store, source_db

__all__ = ["new_store", "source_db"]  # the fixtures, imported for pytest


def backup_files(records: list[BackupRecord]) -> set[str]:
    names = set()
    for record in records:
        assert record.path
        names |= {record.path, manifest_name(record.path)}
    return names


def test_forty_days_of_backups_are_pruned_to_exactly_the_planned_set(
    new_store: StoreFactory,
) -> None:
    store = new_store(keep_days=3, min_keep=2, keep_weekly=3)
    ages = [0.2, 1.1, 2.3, 5.5, 9.6, 12.4, 16.3, 19.2, 23.7, 31.2, 35.8, 39.9]
    made = {age: store.backup(days(age)) for age in ages}
    made[4.4] = store.backup(days(4.4), tags=("manual", "pre-migration"))
    made[27.5] = store.backup(days(27.5))
    store.env.catalog.record_verification(
        made[27.5].id,
        started_at=datetime.now(UTC) - days(27),
        finished_at=datetime.now(UTC) - days(27) + timedelta(minutes=3),
        status="passed",
    )
    failed = [store.failed_run(days(1.6)), store.failed_run(days(11.1))]
    others = [store.backup(days(30), target="other"), store.backup(days(35), target="other")]
    (store.directory() / "notes.txt").write_text("an operator's file: not a backup\n")
    other_files = store.files("other")

    before = store.files()
    records = store.env.catalog.list_backups("app")
    planned = retention.plan(records, store.target().retention, datetime.now(UTC))
    assert {r.id for r in records} == set(planned.keep_ids | planned.delete_ids)

    # the dry run shows the plan, every backup with decision and reason, and touches nothing
    dry = store.cli_json("prune", "app", "--dry-run")
    shown = {b["id"]: b for b in dry["targets"][0]["backups"]}
    assert set(shown) == {r.id for r in records}
    for decision in planned.decisions:
        assert shown[decision.backup_id]["decision"] == decision.action
        assert shown[decision.backup_id]["rules"] == list(decision.rules)
        assert shown[decision.backup_id]["reason"]
    assert dry["deleted"] == 0
    assert dry["targets"][0]["would_delete"] == len(planned.delete_ids)
    code, text = store.cli("prune", "app", "--dry-run")
    assert code == 0
    assert "dry run: nothing was deleted" in text
    for decision in planned.decisions:
        line = next(x for x in text.splitlines() if x.startswith(decision.backup_id[:8]))
        assert f" {decision.action} " in line
    assert store.files() == before

    # the oldest complete backups go, failed runs go, the rules' backups stay
    assert made[27.5].id in planned.keep_ids  # newest verified
    assert retention.PRE_MIGRATION in planned.decision(made[4.4].id).rules
    assert made[39.9].id in planned.delete_ids
    assert {f.id for f in failed} <= planned.delete_ids
    assert len(planned.delete_ids) >= 6

    done = store.cli_json("prune", "app")
    assert done["ok"] is True
    assert done["deleted"] == len(planned.delete_ids)
    kept = [r for r in records if r.id in planned.keep_ids]
    assert store.files() == backup_files(kept) | {"notes.txt"}
    statuses = store.statuses()
    assert {i for i, s in statuses.items() if s == "complete"} == {r.id for r in kept}
    assert {i for i, s in statuses.items() if s == "deleted"} == set(planned.delete_ids)
    # only what the plan names is touched: another target's backups stay
    assert store.files("other") == other_files
    assert all(store.record(r.id).status == "complete" for r in others)
    # the lock files of deleted backups are gone
    lock_dir = store.config.daemon.state_dir / "locks"
    assert not {p.name[:32] for p in lock_dir.iterdir()} & set(planned.delete_ids)

    again = store.cli_json("prune", "app")
    assert again["deleted"] == 0
    assert store.files() == backup_files(kept) | {"notes.txt"}


def test_a_target_whose_last_ten_days_of_runs_failed_keeps_min_keep(
    new_store: StoreFactory,
) -> None:
    store = new_store(keep_days=7, min_keep=3)
    good = [store.backup(days(age)) for age in (15.2, 16.2, 17.2, 18.2)]
    failures = [store.failed_run(days(age + 0.5)) for age in range(10)]
    # the daemon's call: prune_job passes (target, catalog, storage, dry_run=...)
    outcome = prune_target(
        store.target(), store.env.catalog, store.storage, dry_run=False, locks=store.locks()
    )
    result = outcome.as_dict()
    assert result["deleted"] == 1
    assert result["ok"] is True
    assert store.files() == backup_files(good[:3])
    statuses = store.statuses()
    assert [statuses[r.id] for r in good] == ["complete", "complete", "complete", "deleted"]
    # the failed runs are the record of the outage: kept (no files) until a backup succeeds
    assert all(statuses[f.id] == "failed" for f in failures)
    reasons = {b["id"]: b["reason"] for b in result["backups"]}
    assert "min_keep" in reasons[good[0].id]
    assert "record of the outage" in reasons[failures[0].id]
    assert result["backups_by_state"] == {"complete": 3, "failed": 10}
    assert result["oldest_backup_at"] == good[2].started_at.isoformat()
    assert result["stored_bytes"] == store.storage.stored_bytes("app") > 0

    recovered = store.backup(days(0.1))
    after = prune_target(store.target(), store.env.catalog, store.storage, locks=store.locks())
    assert after.deleted == 10 + 1  # the outage's failed runs, and the oldest backup
    statuses = store.statuses()
    assert all(statuses[f.id] == "deleted" for f in failures)
    assert store.files() == backup_files([recovered, *good[:2]])


def test_a_pinned_backup_survives_until_it_is_unpinned(new_store: StoreFactory) -> None:
    store = new_store(keep_days=2, min_keep=1)
    fresh, middle, old = (store.backup(days(age)) for age in (0.5, 10, 20))
    failed = store.failed_run(days(1))

    answer = store.cli_json("pin", "app", old.id[:8])
    assert answer["backup"]["pinned"] is True
    assert store.record(old.id).pinned
    assert store.storage.read_manifest(store.manifest(old))["pinned"] is True
    code, _ = store.cli("pin", "app", failed.id[:8])
    assert code == 2  # only complete backups pin

    result = store.cli_json("prune", "app")
    reasons = {b["id"]: b["reason"] for b in result["targets"][0]["backups"]}
    assert reasons[old.id].startswith("pinned")
    assert store.statuses()[middle.id] == "deleted"
    assert store.files() == backup_files([fresh, old])

    code, text = store.cli("unpin", "app", old.id[:8])
    assert code == 0
    assert "unpinned" in text
    assert store.storage.read_manifest(store.manifest(old))["pinned"] is False
    store.cli_json("prune", "app")
    assert store.files() == backup_files([fresh])


def test_a_backup_in_use_is_kept_this_time(new_store: StoreFactory) -> None:
    store = new_store(keep_days=2, min_keep=1)
    fresh, middle, old = (store.backup(days(age)) for age in (0.5, 10, 20))
    state_dir = store.config.daemon.state_dir
    code = (
        "import sys\n"
        "from pgwarden.storage.locks import BackupLocks\n"
        f"with BackupLocks({str(state_dir)!r}).shared({old.id!r}):\n"
        "    print('restoring', flush=True)\n"
        "    sys.stdin.read()\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as restore:
        try:
            assert restore.stdout is not None
            assert restore.stdout.readline().strip() == "restoring"
            outcome = prune_target(
                store.target(), store.env.catalog, store.storage, locks=store.locks()
            )
        finally:
            restore.kill()
    entry = next(e for e in outcome.entries if e.record.id == old.id)
    assert (entry.action, entry.rules, entry.result) == ("keep", ("in_use",), "kept")
    assert "in use" in entry.reason
    assert outcome.deleted == 1
    assert store.files() == backup_files([fresh, old])
    assert store.statuses()[middle.id] == "deleted"

    later = prune_target(
        store.target(), store.env.catalog, store.storage, locks=BackupLocks(state_dir)
    )
    assert later.deleted == 1
    assert store.files() == backup_files([fresh])


def test_an_undeletable_file_is_reported_and_does_not_stop_the_rest(
    new_store: StoreFactory,
) -> None:
    store = new_store(keep_days=2, min_keep=1)
    fresh, first, stuck, half = (store.backup(days(age)) for age in (0.5, 10, 12, 14))
    with immutable(store.artifact(stuck), store.manifest(half)):
        result = store.cli_json("prune", "app", expect=1)
        outcome = result["targets"][0]
        assert outcome["ok"] is False
        assert outcome["deleted"] == 2  # first entirely, half's file and row
        errors = "\n".join(outcome["errors"])
        assert stuck.path in errors
        assert manifest_name(half.path or "") in errors
        results = {b["id"]: b["result"] for b in outcome["backups"]}
        assert results == {
            fresh.id: "kept",
            first.id: "deleted",
            stuck.id: "not deleted",
            half.id: "deleted",
        }
        # the stuck backup stays whole: file, manifest, catalog row
        assert store.record(stuck.id).status == "complete"
        assert store.artifact(stuck).exists()
        assert store.manifest(stuck).exists()
        # the half-deleted one: data gone, row deleted, manifest left and recognisable
        assert store.record(half.id).status == "deleted"
        assert not store.artifact(half).exists()
        problems = find_problems(store.env.catalog, store.storage, "app")
        assert [p.kind for p in problems] == ["manifest_without_artifact"]
        assert str(store.manifest(half)) in problems[0].message
        code, text = store.cli("prune", "app")
        assert code == 1
        assert "error: backup " in text
    result = store.cli_json("prune", "app")
    assert result["targets"][0]["deleted"] == 1
    assert store.files() == backup_files([fresh]) | {manifest_name(half.path or "")}


def test_a_vanished_backup_does_not_count_toward_min_keep(new_store: StoreFactory) -> None:
    store = new_store(keep_days=2, min_keep=2)
    gone, second, third = (store.backup(days(age)) for age in (10, 20, 30))
    store.artifact(gone).unlink()
    store.manifest(gone).unlink()
    # and a run the catalog thinks failed, though storage holds it whole
    resurrected = store.backup(days(40))
    store.set_status(resurrected.id, "failed")
    outcome = prune_target(store.target(), store.env.catalog, store.storage, locks=store.locks())
    decisions = {e.record.id: (e.action, e.rules, e.result) for e in outcome.entries}
    assert decisions[gone.id] == ("keep", ("not_in_storage",), "kept")
    assert decisions[second.id][0] == decisions[third.id][0] == "keep"
    assert decisions[resurrected.id] == ("delete", ("expired",), "deleted")
    assert any("catalog rebuild" in w for w in outcome.warnings)
    assert store.files() == backup_files([second, third])


def test_prune_every_target_and_usage_errors(new_store: StoreFactory) -> None:
    store = new_store(keep_days=2, min_keep=1)
    app = [store.backup(days(age)) for age in (0.5, 5)]
    other = [store.backup(days(age), target="other") for age in (0.5, 5, 6)]
    result = store.cli_json("prune")
    assert [t["target"] for t in result["targets"]] == ["app", "other"]
    assert result["deleted"] == 3
    assert store.files("app") == backup_files(app[:1])
    assert store.files("other") == backup_files(other[:1])
    code, _ = store.cli("prune", "nosuch")
    assert code == 2
    code, _ = store.cli("pin", "app", "0000")
    assert code == 2


def test_a_broken_lock_directory_deletes_nothing_and_says_why(new_store: StoreFactory) -> None:
    store = new_store(keep_days=2, min_keep=1)
    kept = [store.backup(days(age)) for age in (0.5, 5, 6)]
    locks_dir = store.config.daemon.state_dir / "locks"
    if locks_dir.is_dir():
        locks_dir.rmdir()  # backups leave it empty: their run locks go with them
    locks_dir.write_text("not a directory")
    outcome = prune_target(store.target(), store.env.catalog, store.storage, locks=store.locks())
    assert outcome.deleted == 0
    assert not outcome.ok
    assert len(outcome.errors) == 2
    assert all("locks" in error for error in outcome.errors)
    assert store.files() == backup_files(kept)
    assert all(store.record(b.id).status == "complete" for b in kept)


def test_a_pin_never_reports_success_on_a_backup_being_deleted(new_store: StoreFactory) -> None:
    """Issue 16, item 8: a pin takes the backup's own lock, not only the manifest's."""
    store = new_store(keep_days=2, min_keep=1)
    _fresh, old = (store.backup(days(age)) for age in (0.5, 20))
    state_dir = store.config.daemon.state_dir
    code = (  # a prune in the middle of deleting `old`: it holds the exclusive lock
        "import sys\n"
        "from pgwarden.storage.locks import BackupLocks\n"
        f"with BackupLocks({str(state_dir)!r}).try_exclusive({old.id!r}) as lock:\n"
        "    print('deleting' if lock.held else 'not held', flush=True)\n"
        "    sys.stdin.read()\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as prune:
        try:
            assert prune.stdout is not None
            assert prune.stdout.readline().strip() == "deleting"
            with pytest.raises(BusyError):
                set_pin(
                    store.env.catalog,
                    store.storage,
                    old.id,
                    True,
                    locks=store.locks(),
                    target="app",
                    lock_timeout=0.3,
                )
        finally:
            prune.kill()
    assert store.env.catalog.get_backup(old.id).pinned is False
    assert store.storage.read_manifest(store.manifest(old)).get("pinned") in (None, False)

    outcome = prune_target(store.target(), store.env.catalog, store.storage, locks=store.locks())
    assert outcome.deleted == 1
    with pytest.raises(UsageError, match="deleted"):
        set_pin(store.env.catalog, store.storage, old.id, True, locks=store.locks(), target="app")


def test_a_prune_that_cannot_delete_fails_its_job_and_is_counted(new_store: StoreFactory) -> None:
    """Issue 16, item 7: retention that silently stops.  A deletion refused by the file system
    fails the daemon's prune job (its outcome kept), counts a failure and sets the gauge to 0;
    the next prune that deletes everything sets it back to 1."""
    store = new_store(keep_days=2, min_keep=1)
    _fresh, stuck = (store.backup(days(age)) for age in (0.5, 20))
    state = ServiceState.open(store.config, Metrics())
    runner = JobRunner(
        jobkinds.job_functions(state), 1, lambda job: outcomes.record_job(state, job)
    )
    runner.start()

    def prune() -> Job:
        job = runner.submit(Job(JobKind.PRUNE, "app", store.config))
        version = 0
        while not job.finished:
            version = job.wait_change(version, timeout=5.0)
        return job

    def sample(name: str, **labels: str) -> float | None:
        return state.metrics.registry.get_sample_value(name, {"target": "app", **labels})

    try:
        with immutable(store.artifact(stuck)):
            failed = prune()
        assert failed.state == JobState.FAILED
        assert failed.error_code == "prune_failed"
        assert failed.error is not None and stuck.id[:8] in failed.error
        assert isinstance(failed.result, PruneOutcome) and not failed.result.ok
        assert sample("pgwarden_prune_runs_total", result="failure") == 1
        assert sample("pgwarden_prune_last_run_success") == 0

        later = prune()
        assert later.state == JobState.SUCCEEDED
        assert sample("pgwarden_prune_runs_total", result="success") == 1
        assert sample("pgwarden_prune_last_run_success") == 1
        assert sample("pgwarden_retention_deleted_total") == 1
    finally:
        runner.shutdown(5.0)
        state.close()


def test_a_symlinked_target_directory_is_pruned_and_swept(
    new_store: StoreFactory, tmp_path: Path
) -> None:
    """Issue 16, item 7: a target directory that is a symlink (one project's backups on
    another disk) is written through, so it is also listed, pruned, swept and measured."""
    store = new_store(keep_days=2, min_keep=1)
    fresh = store.backup(days(0.5))
    directory = store.directory()
    elsewhere = tmp_path / "other-disk" / "app"
    elsewhere.parent.mkdir(mode=0o700)
    directory.rename(elsewhere)
    directory.symlink_to(elsewhere, target_is_directory=True)
    old = store.backup(days(20))
    assert store.artifact(old).resolve().parent == elsewhere

    assert {p.name for p in store.storage.list_manifests()} == {
        store.manifest(fresh).name,
        store.manifest(old).name,
    }
    assert store.storage.stored_bytes("app") >= store.artifact(old).stat().st_size
    leftover = elsewhere / "20260101T000000Z-deadbeef.dump.zst.partial"
    leftover.write_bytes(b"interrupted")
    assert store.storage.cleanup_partials() == [directory / leftover.name]
    assert not leftover.exists()

    store.cli_json("prune")
    assert store.files() == backup_files([fresh])
