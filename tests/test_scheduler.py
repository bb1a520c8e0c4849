"""Cron next-fire computation and the scheduler: property tests, DST, catch-up, no long sleeps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from pgwarden.config import cron as cronexpr
from pgwarden.config import parse
from pgwarden.service.clock import FakeClock
from pgwarden.service.scheduler import ScheduleKey, Scheduler

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
EXPRESSIONS = [
    "0 3 * * *",
    "30 2 * * *",
    "*/15 * * * *",
    "0 5 * * 0",
    "15 4 1 * *",
    "@hourly",
    "0 0 29 2 *",
    "45 1 * * 1-5",
]
moments = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2035, 12, 31), timezones=st.just(UTC)
)


@settings(max_examples=300, deadline=None)
@given(expr=st.sampled_from(EXPRESSIONS), tz=st.sampled_from(ZONES), after=moments)
def test_next_fire_is_strictly_later_and_matches(expr: str, tz: str, after: datetime) -> None:
    fire = cronexpr.next_fire(expr, after, tz)
    assert fire > after
    assert fire.second == 0
    local = fire.astimezone(ZoneInfo(tz))
    minute = cronexpr.expand(expr).split()[0]
    zone = ZoneInfo(tz)
    after_transition = (fire - timedelta(hours=1)).astimezone(zone).utcoffset() != local.utcoffset()
    if minute.isdigit() and not after_transition:
        # a time skipped by a DST change fires at the first existing minute after it
        assert local.minute == int(minute)


@settings(max_examples=200, deadline=None)
@given(expr=st.sampled_from(EXPRESSIONS), tz=st.sampled_from(ZONES), after=moments)
def test_successive_fires_are_increasing(expr: str, tz: str, after: datetime) -> None:
    first = cronexpr.next_fire(expr, after, tz)
    second = cronexpr.next_fire(expr, first, tz)
    assert second > first


def test_dst_spring_forward_runs_once_at_the_next_existing_time() -> None:
    # Europe/Berlin skips 02:00-03:00 on 2026-03-29: a 02:30 job runs once, at 03:00.
    tz = "Europe/Berlin"
    after = datetime(2026, 3, 28, 23, 0, tzinfo=UTC)
    fire = cronexpr.next_fire("30 2 * * *", after, tz)
    assert fire.astimezone(ZoneInfo(tz)).hour == 3
    following = cronexpr.next_fire("30 2 * * *", fire, tz)
    assert following.astimezone(ZoneInfo(tz)).date() == datetime(2026, 3, 30).date()


def test_dst_fall_back_runs_once() -> None:
    # 02:30 happens twice on 2026-10-25 in Berlin: the job fires once that day.
    tz = "Europe/Berlin"
    start = datetime(2026, 10, 24, 12, 0, tzinfo=UTC)
    fires = []
    moment = start
    for _ in range(3):
        moment = cronexpr.next_fire("30 2 * * *", moment, tz)
        fires.append(moment.astimezone(ZoneInfo(tz)).date())
    assert len(set(fires)) == 3


def _config(schedule: str = "0 3 * * *", **daemon: object) -> object:
    return parse(
        {
            "daemon": daemon,
            "targets": [
                {
                    "name": "app",
                    "dsn": "postgresql://u@h/app",
                    "backup": {"schedule": schedule},
                    "verify": {"enabled": False},
                    "retention": {"schedule": "off"},
                }
            ],
        },
        Path("s.toml"),
    )


def test_schedule_fires_without_long_sleeps() -> None:
    clock = FakeClock(datetime(2026, 11, 26, 2, 59, 30, tzinfo=UTC))
    sched = Scheduler(_config(), clock.now())  # type: ignore[arg-type]
    assert sched.due(clock.now()) == []
    wait = sched.seconds_until_next(clock.now())
    assert wait == 30
    clock.advance(wait)
    due = sched.due(clock.now())
    assert [e.key for e in due] == [ScheduleKey("app", "backup")]
    assert sched.due(clock.now()) == []  # fired once
    assert sched.seconds_until_next(clock.now()) == 24 * 3600


def test_missed_fires_collapse_into_one_run() -> None:
    clock = FakeClock(datetime(2026, 11, 26, 0, 0, tzinfo=UTC))
    sched = Scheduler(_config("*/5 * * * *"), clock.now())  # type: ignore[arg-type]
    clock.advance(3600)  # a long job or a suspended VM: 12 fire times passed
    assert len(sched.due(clock.now())) == 1
    assert sched.due(clock.now()) == []


def test_catch_up_after_downtime_runs_once() -> None:
    now = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
    last = now - timedelta(days=3)  # three 03:00 runs missed while down
    sched = Scheduler(_config(), now, lambda key: last)  # type: ignore[arg-type]
    due = sched.due(now)
    assert len(due) == 1
    assert due[0].catch_up
    assert sched.due(now) == []
    # the regular next fire (tomorrow 03:00) is still in place
    assert sched.seconds_until_next(now) == 17 * 3600


def test_no_catch_up_when_disabled_or_recent() -> None:
    now = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
    recent = datetime(2026, 11, 26, 3, 0, 5, tzinfo=UTC)
    sched = Scheduler(_config(), now, lambda key: recent)  # type: ignore[arg-type]
    assert sched.due(now) == []
    old = now - timedelta(days=3)
    sched = Scheduler(_config(catch_up=False), now, lambda key: old)  # type: ignore[arg-type]
    assert sched.due(now) == []


def test_jitter_delays_within_bound() -> None:
    import random

    now = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
    sched = Scheduler(_config(jitter=600), now, rng=random.Random(7))  # type: ignore[arg-type]
    wait = sched.seconds_until_next(now)
    assert wait is not None
    assert 3600 <= wait <= 3600 + 600


def test_reload_keeps_unchanged_and_reschedules_changed() -> None:
    now = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
    sched = Scheduler(_config(), now)  # type: ignore[arg-type]
    sched.update(_config("0 4 * * *"), now)  # type: ignore[arg-type]
    assert sched.seconds_until_next(now) == 2 * 3600
