"""Review of the hardening work (issue 16): defects found reading ``main``, each shown by a test
that failed before its fix."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pgwarden.service.scheduler import ScheduleKey, Scheduler
from tests.test_scheduler import _config

DAY = 24 * 3600


def test_a_restart_after_a_large_backward_step_does_not_stop_backups() -> None:
    """A VM that booted with its clock a year fast ran its catch-up backup "in 2027"; NTP then
    set the clock right and the daemon restarted.  Skipping every slot up to that recorded run
    stopped scheduled backups for a year (and the last-success gauge, in the future, silenced
    the alert).  As cron does, a step back of more than a few hours is taken as the new time:
    the next fire is within one period."""
    now = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
    future = now + timedelta(days=400)
    sched = Scheduler(_config(), now, lambda key: future)  # type: ignore[arg-type]
    wait = sched.seconds_until_next(now)
    assert wait is not None and wait <= DAY, wait / DAY
    assert sched.due(now + timedelta(seconds=wait))


def test_a_running_scheduler_follows_a_large_backward_step() -> None:
    """The same step under a running daemon: its entries kept their 2027 fire times."""
    future = datetime(2027, 12, 31, 10, 0, tzinfo=UTC)
    sched = Scheduler(_config(), future)  # type: ignore[arg-type]
    now = future - timedelta(days=400)  # NTP corrected the clock
    assert sched.due(now) == []
    wait = sched.seconds_until_next(now)
    assert wait is not None and wait <= DAY, wait / DAY
    due = sched.due(now + timedelta(seconds=wait))
    assert [e.key for e in due] == [ScheduleKey("app", "backup")]


def test_a_small_backward_step_still_never_repeats_a_slot() -> None:
    """An hour back (NTP correcting a fast clock): the 03:00 run that happened is not repeated
    at the second 03:00 (tests/faults/test_clock_steps.py covers this at length)."""
    ran = datetime(2026, 11, 26, 3, 0, 1, tzinfo=UTC)
    sched = Scheduler(_config(), ran)  # type: ignore[arg-type]
    assert sched.due(ran) == []  # 03:00 is past: next is tomorrow
    now = ran - timedelta(hours=1)  # 02:00:01 again
    assert sched.due(now + timedelta(hours=1)) == []
    restarted = Scheduler(_config(), now, lambda key: ran)  # type: ignore[arg-type]
    assert restarted.due(now + timedelta(hours=1)) == []
