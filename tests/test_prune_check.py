"""``pgwarden check`` shows a target's failed last prune (issue 16, item 7, the remainder).

A prune fails for real: the artifact of a backup its plan deletes is made immutable
(``chattr +i``, removed in a ``finally``).  The failure is recorded in
``<state_dir>/prune/<target>.json`` (0600, directory 0700) by the one-shot ``pgwarden prune``
and by the daemon's prune job alike, and ``pgwarden check`` has a ``fail`` line naming the
target and the error until a prune succeeds.
"""

from __future__ import annotations

import json
import stat
from typing import Any

from pgwarden.config.kinds import JobKind
from pgwarden.metrics import Metrics
from pgwarden.retention.lastprune import PruneRecords
from pgwarden.service import jobkinds, outcomes
from pgwarden.service.jobs import Job, JobRunner, JobState
from pgwarden.service.state import ServiceState
from tests.test_retention_support import Store, StoreFactory, days, immutable, new_store, source_db

__all__ = ["new_store", "source_db"]  # the fixtures, imported for pytest


def prune_line(store: Store, target: str = "app") -> tuple[int, dict[str, Any] | None]:
    """``pgwarden check TARGET --json``: its exit code and its ``Last prune`` item."""
    code, out = store.cli("check", target, "--json")
    items = [r for r in json.loads(out)["results"] if r["check"] == "retention.last_prune"]
    assert len(items) <= 1, items
    return code, items[0] if items else None


def test_a_failed_one_shot_prune_shows_in_check_until_a_prune_succeeds(
    new_store: StoreFactory,
) -> None:
    store = new_store(keep_days=2, min_keep=1)
    _fresh, stuck = (store.backup(days(age)) for age in (0.5, 20))
    assert prune_line(store)[1] is None  # never pruned: no line

    with immutable(store.artifact(stuck)):
        assert store.cli_json("prune", "app", expect=1)["ok"] is False
    code, item = prune_line(store)
    assert code == 1
    assert item is not None
    assert item["status"] == "fail"
    assert item["target"] == "app"
    assert stuck.id[:8] in item["detail"]
    assert "cannot delete the backup file" in item["detail"]
    code, text = store.cli("check", "app")
    assert "FAIL  Last prune:" in text, text

    record = PruneRecords(store.config.daemon.state_dir)
    path = record.path_for("app")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["app.json"]  # no temporary left

    store.cli_json("prune", "app", "--dry-run")  # a dry run records nothing
    assert prune_line(store)[1] == item

    assert store.cli_json("prune", "app")["targets"][0]["deleted"] == 1
    _code, item = prune_line(store)
    assert item is not None
    assert item["status"] == "pass"
    assert "ok, 1 backup(s) deleted" in item["detail"]


def test_a_failed_daemon_prune_job_shows_in_check(new_store: StoreFactory) -> None:
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

    try:
        with immutable(store.artifact(stuck)):
            assert prune().state == JobState.FAILED
        _code, item = prune_line(store)
        assert item is not None and item["status"] == "fail", item
        assert stuck.id[:8] in item["detail"]
        assert prune().state == JobState.SUCCEEDED
        _code, item = prune_line(store)
        assert item is not None and item["status"] == "pass", item
    finally:
        runner.shutdown(5.0)
        state.close()


def test_an_unreadable_record_is_a_warning(new_store: StoreFactory) -> None:
    store = new_store()
    path = PruneRecords(store.config.daemon.state_dir).path_for("app")
    path.parent.mkdir(mode=0o700)
    path.write_text("[1, 2")
    _code, item = prune_line(store)
    assert item is not None and item["status"] == "warn"
    assert str(path) in item["detail"]
    path.write_text('["not", "a", "record"]')
    _code, item = prune_line(store)
    assert item is not None and item["status"] == "warn"
