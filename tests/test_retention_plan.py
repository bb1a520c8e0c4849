"""Property tests of the pure retention planner: every invariant of DESIGN.md "Retention"."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgwarden.catalog import BackupRecord
from pgwarden.config import RetentionSettings
from pgwarden.retention import plan as retention
from pgwarden.retention.plan import DELETE, KEEP, Plan, plan

NOW = datetime(2025, 6, 15, 12, 0, tzinfo=UTC)


def record(
    index: int,
    started_at: datetime,
    status: str = "complete",
    *,
    tags: Sequence[str] = ("scheduled",),
    pinned: bool = False,
    verify_status: str | None = None,
) -> BackupRecord:
    return BackupRecord(
        id=f"{index:032x}",
        target="app",
        database="app",
        started_at=started_at,
        finished_at=started_at + timedelta(minutes=1),
        status=status,
        tags=tuple(tags),
        format="custom",
        compression="zstd:1",
        path=f"x-{index}.dump",
        size_bytes=100,
        sha256=None,
        pinned=pinned,
        verified_at=started_at + timedelta(hours=2) if verify_status else None,
        verify_status=verify_status,
        error=None,
        attempt=1,
        duration_s=60.0,
        deleted_at=None,
    )


_one = st.tuples(
    # whole hours give ties (broken by id); minutes give spread; negative = clock skew
    st.integers(-30, 24 * 150),
    st.sampled_from((0, 0, 7, 31)),
    st.sampled_from(("complete",) * 4 + ("failed", "interrupted", "running", "deleted")),
    st.sampled_from(
        ((), ("scheduled",), ("manual",), ("pre-migration",), ("manual", "pre-migration"))
    ),
    st.sampled_from((False, False, False, False, False, False, False, True)),
    st.sampled_from((None, None, "passed", "failed")),
)


def _records(
    drawn: list[tuple[int, int, str, tuple[str, ...], bool, str | None]],
) -> list[BackupRecord]:
    return [
        record(
            index,
            NOW - timedelta(hours=hours, minutes=minutes),
            status,
            tags=tags,
            pinned=pinned,
            verify_status=verify if status == "complete" else None,
        )
        for index, (hours, minutes, status, tags, pinned, verify) in enumerate(drawn)
    ]


def backups() -> st.SearchStrategy[list[BackupRecord]]:
    return st.lists(_one, max_size=50).map(_records)


policies = st.builds(
    RetentionSettings,
    keep_days=st.integers(1, 40),
    min_keep=st.integers(1, 8),
    keep_daily=st.integers(0, 10),
    keep_weekly=st.integers(0, 6),
    keep_monthly=st.integers(0, 4),
)


def newest_first(items: Sequence[BackupRecord]) -> list[BackupRecord]:
    return sorted(items, key=lambda b: (b.started_at, b.id), reverse=True)


def complete_newest_first(items: Sequence[BackupRecord]) -> list[BackupRecord]:
    return newest_first([b for b in items if b.status == "complete"])


def kept(result: Plan, items: Sequence[BackupRecord]) -> list[BackupRecord]:
    return [b for b in items if b.id in result.keep_ids]


# -- invariants ----------------------------------------------------------------------------


@given(backups(), policies)
def test_every_live_backup_gets_exactly_one_decision_with_a_reason(
    items: list[BackupRecord], policy: RetentionSettings
) -> None:
    result = plan(items, policy, NOW)
    live = {b.id for b in items if b.status != "deleted"}
    assert [d.backup_id for d in result.decisions] == [
        b.id for b in newest_first(items) if b.status != "deleted"
    ]
    assert {d.backup_id for d in result.decisions} == live
    assert result.keep_ids | result.delete_ids == live
    assert not result.keep_ids & result.delete_ids
    for decision in result.decisions:
        assert decision.action in (KEEP, DELETE)
        assert decision.reason.strip()
        assert decision.rules


@given(backups(), policies)
def test_the_newest_verified_backup_is_never_deleted(
    items: list[BackupRecord], policy: RetentionSettings
) -> None:
    verified = [b for b in complete_newest_first(items) if b.verify_status == "passed"]
    result = plan(items, policy, NOW)
    if verified:
        assert result.decision(verified[0].id).keep
        assert retention.NEWEST_VERIFIED in result.decision(verified[0].id).rules


@given(backups(), policies)
def test_min_keep_newest_complete_backups_survive_whatever_their_age(
    items: list[BackupRecord], policy: RetentionSettings
) -> None:
    complete = complete_newest_first(items)
    result = plan(items, policy, NOW)
    for backup in complete[: policy.min_keep]:
        assert result.decision(backup.id).keep
    survivors = [b for b in kept(result, items) if b.status == "complete"]
    assert len(survivors) >= min(policy.min_keep, len(complete))


@given(backups(), policies)
def test_pinned_backups_survive(items: list[BackupRecord], policy: RetentionSettings) -> None:
    result = plan(items, policy, NOW)
    for backup in items:
        if backup.pinned and backup.status != "deleted":
            assert result.decision(backup.id).keep


@given(backups(), policies)
def test_pre_migration_backups_live_at_least_seven_days(
    items: list[BackupRecord], policy: RetentionSettings
) -> None:
    result = plan(items, policy, NOW)
    for backup in items:
        if (
            backup.status == "complete"
            and "pre-migration" in backup.tags
            and NOW - backup.started_at < timedelta(days=7)
        ):
            assert result.decision(backup.id).keep


@given(backups(), policies)
def test_complete_backups_within_keep_days_are_kept(
    items: list[BackupRecord], policy: RetentionSettings
) -> None:
    result = plan(items, policy, NOW)
    for backup in items:
        if backup.status == "complete" and NOW - backup.started_at <= timedelta(policy.keep_days):
            assert result.decision(backup.id).keep


@given(backups(), policies)
def test_failed_and_interrupted_leftovers_are_removed_running_ones_kept(
    items: list[BackupRecord], policy: RetentionSettings
) -> None:
    result = plan(items, policy, NOW)
    complete = complete_newest_first(items)
    last_success = complete[0].started_at if complete else None
    for backup in items:
        if backup.pinned or backup.status == "deleted":
            continue
        decision = result.decision(backup.id)
        age = NOW - backup.started_at
        if backup.status in ("failed", "interrupted") and (
            last_success is None or backup.started_at > last_success
        ):  # the record of an outage still going on
            assert decision.rules == (retention.SINCE_LAST_SUCCESS,)
        elif backup.status == "failed":
            assert decision.action == DELETE
        elif backup.status == "interrupted":
            expected = DELETE if age >= retention.INTERRUPTED_GRACE else KEEP
            assert decision.action == expected
        elif backup.status == "running":
            assert decision.keep


def _reference_periods(
    items: Sequence[BackupRecord], count: int, key: Callable[[datetime], str]
) -> set[str]:
    newest: dict[str, BackupRecord] = {}
    for backup in complete_newest_first(items):
        newest.setdefault(key(backup.started_at), backup)
    periods = sorted(newest, reverse=True)[:count]
    return {newest[p].id for p in periods}


def _week_key(when: datetime) -> str:
    iso = when.isocalendar()
    return f"{iso.year:04d}-{iso.week:02d}"


@given(backups(), policies)
def test_gfs_keeps_the_newest_backup_of_each_recent_period(
    items: list[BackupRecord], policy: RetentionSettings
) -> None:
    result = plan(items, policy, NOW)
    for count, key, rule in (
        (policy.keep_daily, lambda t: t.strftime("%Y-%m-%d"), retention.KEEP_DAILY),
        (policy.keep_weekly, _week_key, retention.KEEP_WEEKLY),
        (policy.keep_monthly, lambda t: t.strftime("%Y-%m"), retention.KEEP_MONTHLY),
    ):
        expected = _reference_periods(items, count, key)
        assert {d.backup_id for d in result.decisions if rule in d.rules} == expected
        assert expected <= result.keep_ids


@given(backups(), policies)
def test_a_complete_backup_is_deleted_only_when_no_rule_keeps_it(
    items: list[BackupRecord], policy: RetentionSettings
) -> None:
    result = plan(items, policy, NOW)
    top = {b.id for b in complete_newest_first(items)[: policy.min_keep]}
    for backup in items:
        if backup.status == "complete" and backup.id in result.delete_ids:
            assert NOW - backup.started_at > timedelta(days=policy.keep_days)
            assert not backup.pinned
            assert backup.id not in top
            assert "pre-migration" not in backup.tags or NOW - backup.started_at > timedelta(7)
            assert result.decision(backup.id).rules == (retention.EXPIRED,)


@given(backups(), policies, st.randoms(use_true_random=False))
def test_the_plan_is_deterministic_and_ignores_input_order(
    items: list[BackupRecord], policy: RetentionSettings, rng: object
) -> None:
    shuffled = list(items)
    rng.shuffle(shuffled)  # type: ignore[attr-defined]
    assert plan(items, policy, NOW).decisions == plan(shuffled, policy, NOW).decisions
    assert plan(items, policy, NOW).decisions == plan(items, policy, NOW).decisions


@given(backups(), policies)
def test_planning_again_after_applying_deletes_nothing_more(
    items: list[BackupRecord], policy: RetentionSettings
) -> None:
    first = plan(items, policy, NOW)
    # applied the way prune applies it: the rows are marked deleted
    applied = [
        dataclasses.replace(b, status="deleted", pinned=False) if b.id in first.delete_ids else b
        for b in items
    ]
    second = plan(applied, policy, NOW)
    assert second.delete_ids == frozenset()
    assert second.keep_ids == first.keep_ids
    # and the same when they vanish from the catalog altogether
    remaining = [b for b in items if b.id not in first.delete_ids]
    assert plan(remaining, policy, NOW).delete_ids == frozenset()


@given(backups(), policies, policies)
def test_a_more_generous_policy_keeps_a_superset(
    items: list[BackupRecord], small: RetentionSettings, other: RetentionSettings
) -> None:
    big = RetentionSettings(
        keep_days=max(small.keep_days, other.keep_days),
        min_keep=max(small.min_keep, other.min_keep),
        keep_daily=max(small.keep_daily, other.keep_daily),
        keep_weekly=max(small.keep_weekly, other.keep_weekly),
        keep_monthly=max(small.keep_monthly, other.keep_monthly),
    )
    assert plan(items, small, NOW).keep_ids <= plan(items, big, NOW).keep_ids


# -- examples ------------------------------------------------------------------------------


def test_a_week_of_failed_backups_does_not_empty_the_store() -> None:
    """The strategy's ``find -mtime +7 -delete`` would delete every backup here."""
    items = [record(i, NOW - timedelta(days=20 - i)) for i in range(5)]  # 16..20 days old
    failures = [
        record(10 + day, NOW - timedelta(days=day, hours=12), "failed") for day in range(10)
    ]
    result = plan(items + failures, RetentionSettings(keep_days=7, min_keep=3), NOW)
    assert result.delete_ids == {items[0].id, items[1].id}
    assert result.keep_ids == {items[4].id, items[3].id, items[2].id} | {f.id for f in failures}
    assert "min_keep" in result.decision(items[4].id).reason
    assert "expired" in result.decision(items[0].id).reason
    assert "record of the outage" in result.decision(failures[0].id).reason
    # once a backup succeeds again, the outage's failed runs go
    recovered = [*items, *failures, record(99, NOW - timedelta(hours=1))]
    after = plan(recovered, RetentionSettings(keep_days=7, min_keep=3), NOW)
    assert {f.id for f in failures} <= after.delete_ids
    assert "failed run" in after.decision(failures[0].id).reason


def test_grandfather_father_son_over_a_year_of_daily_backups() -> None:
    start = datetime(2024, 6, 16, 3, 0, tzinfo=UTC)
    items = [record(i, start + timedelta(days=i)) for i in range(365)]
    now = items[-1].started_at + timedelta(hours=1)
    policy = RetentionSettings(
        keep_days=7, min_keep=3, keep_daily=10, keep_weekly=4, keep_monthly=12
    )
    result = plan(items, policy, now)
    kept_days = sorted(b.started_at.date().isoformat() for b in kept(result, items))
    # 10 daily (covering the 7 days), 4 Sundays (ISO weeks end on Sunday; this week's newest
    # is today), 12 month ends (this month's newest is today)
    assert len(kept_days) == len(set(kept_days))
    assert kept_days[-10:] == [
        (now - timedelta(days=d)).date().isoformat() for d in range(9, -1, -1)
    ]
    sundays = [
        b for b in kept(result, items) if retention.KEEP_WEEKLY in result.decision(b.id).rules
    ]
    assert len(sundays) == 4
    months = [
        b for b in kept(result, items) if retention.KEEP_MONTHLY in result.decision(b.id).rules
    ]
    assert len(months) == 12
    assert {b.started_at.month for b in months} == set(range(1, 13))
    assert len(kept_days) == len(
        {*(b.id for b in sundays), *(b.id for b in months)} | {b.id for b in items[-10:]}
    )


def test_reasons_name_every_rule_that_keeps_a_backup() -> None:
    items = [
        record(1, NOW - timedelta(days=30), pinned=True),
        record(2, NOW - timedelta(days=20), verify_status="passed"),
        record(3, NOW - timedelta(days=5), tags=("pre-migration",)),
        record(4, NOW - timedelta(days=1)),
        record(5, NOW - timedelta(hours=2), "running"),
        record(6, NOW - timedelta(hours=3), "interrupted"),
        record(7, NOW - timedelta(days=3), "interrupted"),
        record(8, NOW - timedelta(days=40), "deleted"),
        record(9, NOW - timedelta(minutes=90)),
        record(10, NOW - timedelta(minutes=10), "failed"),
        record(11, NOW - timedelta(days=2), "failed"),
    ]
    result = plan(items, RetentionSettings(keep_days=2, min_keep=1), NOW)
    assert result.decision(items[0].id).reason == "pinned (pgwarden unpin releases it)"
    assert result.decision(items[1].id).rules == (retention.NEWEST_VERIFIED,)
    assert result.decision(items[2].id).rules == (retention.PRE_MIGRATION,)
    assert "until 2025-06-17" in result.decision(items[2].id).reason
    assert result.decision(items[3].id).rules == (retention.KEEP_DAYS,)
    assert result.decision(items[8].id).rules == (retention.MIN_KEEP, retention.KEEP_DAYS)
    assert result.decision(items[4].id).rules == (retention.RUNNING,)
    assert result.decision(items[5].id).rules == (retention.RECENTLY_INTERRUPTED,)
    assert result.decision(items[6].id).action == DELETE
    assert items[7].id not in result
    assert result.decision(items[9].id).rules == (retention.SINCE_LAST_SUCCESS,)
    assert result.decision(items[10].id).rules == (retention.FAILED_RUN,)


def test_now_must_be_timezone_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        plan([], RetentionSettings(), datetime(2025, 1, 1))


def test_an_empty_store_plans_nothing() -> None:
    assert plan([], RetentionSettings(), NOW).decisions == ()
