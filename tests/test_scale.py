"""What keeps pgwarden cheap with 100 targets and a long history (issue 19, ``benchmarks/scale.py``).

* the scheduler's per-tick check for a wall clock stepped back does no cron arithmetic while
  the clock moves forwards (it cost 1.4 % of a core with 100 targets), yet still reschedules
  after a backward step;
* the catalog summarises one target on its own (each job's metrics refresh used to summarise
  every target), equal to that target's entry among all summaries;
* ``/metrics`` is rendered from cached series prefixes and family texts, byte for byte what
  prometheus_client writes, in each format a scraper negotiates, after every kind of change;
* the daemon migrates a SQLite catalog in a child process: Alembic never stays loaded (9 MB
  of idle RSS).
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.exposition import choose_encoder

from pgwarden.catalog import BackupStatus, open_catalog
from pgwarden.catalog.db import sqlite_at_head
from pgwarden.config import cron as cronexpr
from pgwarden.config import parse
from pgwarden.config.kinds import JobKind
from pgwarden.errors import CatalogError
from pgwarden.metrics import Metrics
from pgwarden.metrics.exposition import FastExposition
from pgwarden.monitor.snapshot import MonitorCollector, Snapshot, SnapshotStore
from pgwarden.service.scheduler import Scheduler
from pgwarden.service.state import open_migrated

START = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def _config(workdir: Path, targets: int) -> Any:
    doc = {
        "daemon": {"state_dir": str(workdir / "state")},
        "storage": {"path": str(workdir / "backups")},
        "targets": [
            {"name": f"t{i}", "dsn": f"postgresql://u@localhost/db{i}"} for i in range(targets)
        ],
    }
    return parse(doc, workdir / "pgwarden.toml")


def test_forward_ticks_do_no_cron_arithmetic_but_a_backward_step_reschedules(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scheduler = Scheduler(_config(workdir, 100), START)
    calls = 0
    real = cronexpr.next_fire

    def counting(expression: str, after: datetime, tz: str = "UTC") -> datetime:
        nonlocal calls
        calls += 1
        return real(expression, after, tz)

    monkeypatch.setattr(cronexpr, "next_fire", counting)
    for second in range(600):  # ten minutes of one-second ticks, nothing due
        now = START + timedelta(seconds=second)
        assert scheduler.due(now) == []
        scheduler.seconds_until_next(now)
    assert calls == 0
    # a clock stepped back by a day: the backup is due at the first 03:00 after the new time
    stepped = START - timedelta(days=1)
    scheduler.due(stepped)
    assert calls > 0
    assert scheduler.next_for("t0")[JobKind.BACKUP] == real("0 3 * * *", stepped)


def test_one_target_summary_equals_its_entry_among_all(workdir: Path) -> None:
    with open_catalog(f"sqlite:///{workdir / 'catalog.db'}") as catalog:
        for i in range(12):
            backup_id = f"{i:032x}"
            target = f"t{i % 3}"
            started = START + timedelta(hours=i)
            catalog.record_backup_start(
                backup_id, target=target, database="db", started_at=started, format="custom"
            )
            catalog.record_backup_finish(
                backup_id,
                status=BackupStatus.FAILED if i % 4 == 0 else BackupStatus.COMPLETE,
                finished_at=started + timedelta(minutes=1),
                size_bytes=1000 + i,
            )
        everything = catalog.summaries()
        assert set(everything) == {"t0", "t1", "t2"}
        for target, summary in everything.items():
            assert catalog.summary(target) == summary
        assert catalog.summary("absent") is None
        listed = catalog.list_backups("t1", statuses=(BackupStatus.COMPLETE,))
        assert [r.started_at for r in listed] == sorted(
            (r.started_at for r in listed), reverse=True
        )
        assert all(r.started_at.tzinfo is not None and r.tags == () for r in listed)


@pytest.mark.parametrize(
    "accept",
    [
        "",
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
        "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        "text/plain;version=1.0.0",
    ],
)
def test_fast_exposition_writes_exactly_what_prometheus_client_writes(accept: str) -> None:
    metrics = Metrics()
    for i in range(100):
        metrics.init_target(f'db{i:03d}"\\\n')  # label values that need escaping
    metrics.backup_runs.labels("db001", "success").inc(3)
    metrics.backup_last_size.labels("db002").set(1.5e10)
    metrics.storage_free.set(float("inf"))
    fast = FastExposition(metrics.registry)
    encoder, content_type = choose_encoder(accept)
    assert fast.render(encoder, content_type) == encoder(metrics.registry)
    metrics.init_target("late")  # series added after the first scrape, values changed
    metrics.backup_runs.labels("db001", "success").inc()
    assert fast.render(encoder, content_type) == encoder(metrics.registry)
    # each family's text is kept between scrapes: every kind of change must show at once
    store = SnapshotStore()
    metrics.registry.register(MonitorCollector(store))
    assert fast.render(encoder, content_type) == encoder(metrics.registry)
    changes = [
        lambda: metrics.backup_last_size.labels("db002").set(7),
        lambda: metrics.backup_last_size.labels("db002").set(1.5e10),  # back to the value before
        lambda: metrics.storage_free.set(float("nan")),  # never equal to itself
        lambda: metrics.forget_target("late"),  # series removed
        lambda: metrics.backup_last_size.labels("late").set(1),  # ... and added back
        lambda: store.publish(Snapshot(taken_at=1_700_000_000.0, server_errors={"db003": 2})),
        lambda: store.publish(Snapshot(taken_at=1_700_000_015.0, server_errors={"db003": 2})),
    ]
    for change in changes:
        change()
        assert fast.render(encoder, content_type) == encoder(metrics.registry)
        assert fast.render(encoder, content_type) == encoder(metrics.registry)  # from the cache


def test_the_daemon_migrates_a_sqlite_catalog_in_a_child_and_never_loads_alembic(
    workdir: Path,
) -> None:
    url = f"sqlite:///{workdir / 'state' / 'catalog.db'}"
    probe = (
        "import sys\n"
        "from pgwarden.service.state import open_migrated\n"
        "catalog = open_migrated(sys.argv[1])\n"
        "print(catalog.list_backups(), 'alembic' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, url], capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["[]", "False"]
    assert sqlite_at_head(url) is True
    with sqlite3.connect(workdir / "state" / "catalog.db") as db:
        db.execute("UPDATE alembic_version SET version_num = '999'")
    with pytest.raises(CatalogError, match="revision '999' which this pgwarden does not know"):
        open_migrated(url)
