"""Retention planning at scale: plan 100,000 backups and print the time (goal: under 1 s).

The backups are catalog records (:class:`pgwarden.catalog.BackupRecord`), one every 15 minutes
(about 2.9 years), with failed and interrupted runs, pins, drills and pre-migration tags mixed
in, planned under a full grandfather-father-son policy.  Printed beside it: the strategy's
``find -mtime +7 -delete`` done in Python (an age filter) as the floor to compare against.

Run: ``.venv/bin/python benchmarks/retention.py [COUNT]``.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from pgwarden.catalog import BackupRecord
from pgwarden.config import RetentionSettings
from pgwarden.retention.plan import plan

GOAL_S = 1.0
ROUNDS = 5


def make_backups(count: int, now: datetime) -> list[BackupRecord]:
    rng = random.Random(42)
    found = []
    for index in range(count):
        started = now - timedelta(minutes=15 * index + rng.randint(0, 5))
        roll = rng.random()
        status = "failed" if roll < 0.03 else "interrupted" if roll < 0.04 else "complete"
        tags = ("pre-migration",) if rng.random() < 0.01 else ("scheduled",)
        verified = status == "complete" and rng.random() < 0.02
        found.append(
            BackupRecord(
                id=f"{rng.getrandbits(128):032x}",
                target="app",
                database="app",
                started_at=started,
                finished_at=started + timedelta(minutes=2),
                status=status,
                tags=tags,
                format="custom",
                compression="zstd:1",
                path=None,
                size_bytes=1 << 20,
                sha256=None,
                pinned=status == "complete" and rng.random() < 0.001,
                verified_at=started + timedelta(hours=2) if verified else None,
                verify_status="passed" if verified else None,
                error=None,
                attempt=1,
                duration_s=120.0,
                deleted_at=None,
            )
        )
    rng.shuffle(found)  # the planner must not rely on the catalog's order
    return found


def best_of(rounds: int, work: Callable[[], object]) -> tuple[float, float, float]:
    """Best wall time, median wall time, best CPU time of this process (a loaded machine
    inflates wall time; CPU time shows what the work itself costs)."""
    walls, cpus = [], []
    for _ in range(rounds):
        wall, cpu = time.perf_counter(), time.process_time()
        work()
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
    return min(walls), statistics.median(walls), min(cpus)


def main() -> int:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    backups = make_backups(count, now)
    policy = RetentionSettings(
        keep_days=7, min_keep=3, keep_daily=30, keep_weekly=52, keep_monthly=36
    )
    result = plan(backups, policy, now)
    best, median, cpu = best_of(ROUNDS, lambda: plan(backups, policy, now))
    cutoff = now - timedelta(days=7)
    floor, _, floor_cpu = best_of(ROUNDS, lambda: [b for b in backups if b.started_at < cutoff])
    print(
        f"retention plan of {count:,} backups: best {best * 1000:.0f} ms wall "
        f"({cpu * 1000:.0f} ms CPU), median {median * 1000:.0f} ms over {ROUNDS} rounds, "
        f"{best / count * 1e6:.2f} us per backup"
    )
    print(
        f"  kept {len(result.keep_ids):,}, deleted {len(result.delete_ids):,}, "
        f"every one with a reason"
    )
    load = os.getloadavg()[0]
    print(
        f"  goal {GOAL_S:.1f} s: {cpu:.2f} s CPU ({'met' if cpu < GOAL_S else 'MISSED'}), "
        f"{best:.2f} s wall ({'met' if best < GOAL_S else 'missed'}; load average "
        f"{load:.1f} on {os.cpu_count()} CPUs)"
    )
    print(
        f"  vs an age filter alone (find -mtime +7): {floor * 1000:.0f} ms wall "
        f"({floor_cpu * 1000:.0f} ms CPU); the planner costs {cpu / max(floor_cpu, 1e-9):.1f}x "
        f"that"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
