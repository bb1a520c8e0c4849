"""Wall-clock steps under the scheduler: forwards (a VM resumed, NTP catching up) and
backwards (NTP correcting a fast clock), with and without a daemon restart after the step.

The daemon's loop is replayed on a clock whose wall time can jump while its monotonic time runs
on (as the kernel's do): every tick, ``Scheduler.due(now)``; at random moments (seeded) the wall
clock steps +3 h or -1 h, and sometimes the daemon restarts (a new scheduler that asks for the
last run of each schedule, as the catalog answers).  Three schedules: every 15 minutes, hourly,
daily.  Checked:

- no schedule fires twice for the same slot (a cron time; a catch-up run stands for the slot
  it catches up);
- none is lost for more than one period: between two fires of a schedule, no more than one
  period (plus a tick) of real time passes, except for the hour a backward step repeats (its
  slots ran already: not firing them again is the point);
- a forward step collapses the slots it skipped into one run, at once.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pgwarden.config import Config, parse
from pgwarden.config import cron as cronexpr
from pgwarden.service.scheduler import ScheduleKey, Scheduler

TICK = 10.0  # seconds between loop turns of the replay (the daemon's is 1 s)
START = datetime(2026, 11, 26, 0, 7, tzinfo=UTC)
SCHEDULES = {"backup": "*/15 * * * *", "verify": "0 * * * *", "prune": "30 3 * * *"}
PERIODS = {"backup": 900.0, "verify": 3600.0, "prune": 86400.0}


def _config() -> Config:
    return parse(
        {
            "daemon": {"catch_up": True},
            "targets": [
                {
                    "name": "app",
                    "dsn": "postgresql://u@h/app",
                    "backup": {"schedule": SCHEDULES["backup"]},
                    "verify": {"schedule": SCHEDULES["verify"]},
                    "retention": {"schedule": SCHEDULES["prune"]},
                }
            ],
        },
        Path("clock.toml"),
    )


@dataclass
class Fire:
    kind: str
    slot: datetime
    wall: datetime
    mono: float


@dataclass
class Replay:
    """The daemon's main loop on a stepping clock."""

    seed: int
    config: Config = field(default_factory=_config)
    wall: datetime = START
    mono: float = 0.0
    fires: list[Fire] = field(default_factory=list)
    #: (monotonic time, seconds) of each backward step
    back_steps: list[tuple[float, float]] = field(default_factory=list)
    log: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.scheduler = Scheduler(self.config, self.wall, self.last_run)

    def last_run(self, key: ScheduleKey) -> datetime | None:
        """What the catalog says: the start of the latest run of ``key`` (in wall time)."""
        runs = [f.wall for f in self.fires if f.kind == key.kind]
        return runs[-1] if runs else None

    def turn(self) -> None:
        for entry in self.scheduler.due(self.wall):
            kind = str(entry.key.kind)
            slot = _slot_at_or_before(kind, self.wall) if entry.catch_up else entry.next_fire
            self.fires.append(Fire(kind, slot, self.wall, self.mono))
        self.wall += timedelta(seconds=TICK)
        self.mono += TICK

    def step(self, seconds: float) -> None:
        self.log.append(f"at {self.wall:%m-%d %H:%M} step {seconds / 3600:+.0f} h")
        self.wall += timedelta(seconds=seconds)
        if seconds < 0:
            self.back_steps.append((self.mono, -seconds))

    def restart(self) -> None:
        self.log.append(f"at {self.wall:%m-%d %H:%M} restart")
        self.scheduler = Scheduler(self.config, self.wall, self.last_run)

    def run(self, seconds: float) -> None:
        for _ in range(int(seconds / TICK)):
            self.turn()

    def check(self) -> None:
        context = f"seed {self.seed}: {'; '.join(self.log)}"
        seen: set[tuple[str, datetime]] = set()
        for fire in self.fires:
            key = (fire.kind, fire.slot)
            assert key not in seen, f"{context}: {fire.kind} fired twice for {fire.slot}"
            seen.add(key)
        for kind, period in PERIODS.items():
            moments = [0.0, *(f.mono for f in self.fires if f.kind == kind), self.mono]
            for before, after in itertools.pairwise(moments):
                repeated = sum(s for at, s in self.back_steps if before <= at <= after)
                allowed = period + repeated + TICK
                assert after - before <= allowed, (
                    f"{context}: {kind} went {after - before:.0f} s without running "
                    f"(allowed {allowed:.0f} s) from {before:.0f} s"
                )


def _slot_at_or_before(kind: str, moment: datetime) -> datetime:
    """The latest cron time of ``kind`` at or before ``moment``."""
    slot = cronexpr.next_fire(SCHEDULES[kind], moment - timedelta(seconds=PERIODS[kind] + 60))
    while (following := cronexpr.next_fire(SCHEDULES[kind], slot)) <= moment:
        slot = following
    return slot


def test_forward_step_collapses_into_one_run() -> None:
    replay = Replay(0)
    replay.run(3 * 3600)
    count = len(replay.fires)
    replay.step(3 * 3600)
    replay.turn()  # the first turn after the step: one run per schedule that missed slots
    caught = [f.kind for f in replay.fires[count:]]
    assert sorted(caught) == ["backup", "prune", "verify"], caught  # 03:07 -> 06:07
    replay.run(2 * 86400)
    replay.check()


def test_backward_step_never_repeats_a_slot() -> None:
    replay = Replay(0)
    replay.run(3 * 3600 + 1800)  # past the daily 03:30 run
    replay.step(-3600)
    replay.run(2 * 86400)
    replay.check()
    daily = [f.slot for f in replay.fires if f.kind == "prune"]
    assert len(daily) == len(set(daily)) == 2, daily


def test_backward_step_then_restart_never_repeats_a_slot() -> None:
    replay = Replay(0)
    replay.run(3 * 3600 + 1800)
    replay.step(-3600)
    replay.restart()  # the new scheduler learns the last runs from the catalog
    replay.run(86400)
    replay.check()


def test_random_steps_and_restarts(fault_seed: int) -> None:
    rng = random.Random(fault_seed)
    replay = Replay(fault_seed)
    for _ in range(12):
        replay.run(rng.uniform(0, 6 * 3600))
        event = rng.choice(("forward", "backward", "restart", "backward+restart"))
        if event == "forward":
            replay.step(3 * 3600)
        elif event.startswith("backward"):
            replay.step(-3600)
        if event.endswith("restart"):
            replay.restart()
    replay.run(2 * 86400)
    replay.check()
