"""Stalled runs are cancelled (issue 16, item 9): a dump or a restore that makes no progress for
``stall_timeout`` fails with that reason, leaves nothing behind and is counted.

Real stalls: another session holds ``ACCESS EXCLUSIVE`` on a table, so ``pg_dump`` (or
``pg_restore``) waits on the lock and moves nothing.  And the opposite: an index build that
takes longer than ``stall_timeout`` (an expression index over an immutable SQL function that
sleeps) reads nothing from the archive but works, and is *not* a stall.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest

from pgwarden.backup.take import BackupRequest, take_backup
from pgwarden.catalog import DrillStatus
from pgwarden.config.kinds import JobKind
from pgwarden.errors import ConfigError, StallError
from pgwarden.pg.stallwatch import StallWatch
from pgwarden.restore.outcome import VerifyOutcome
from pgwarden.service.core import Service
from pgwarden.service.jobs import JobState
from tests.helpers import Env, finish_job, job_service, make_config, open_env, target_doc
from tests.pgservers import PgServer
from tests.sampledata import make_sample_db
from tests.test_backup_faults import table_locked

STALL_S = 2


def _env(
    workdir: Path, server: PgServer, db: str, fmt: str = "custom", jobs: int = 1, split: bool = True
) -> Env:
    doc = target_doc(
        server,
        db,
        backup={"retries": 0, "format": fmt, "stall_timeout": STALL_S},
        verify={"stall_timeout": STALL_S, "jobs": jobs, "split_tables": split},
    )
    return open_env(make_config(workdir, [doc]))


def _stalled_count(service: Service, target: str, kind: str) -> float | None:
    return service.state.metrics.registry.get_sample_value(
        "pgwarden_jobs_stalled_total", {"target": target, "kind": kind}
    )


def _tools_left() -> list[str]:
    names = []
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            if child.name() in ("pg_dump", "pg_restore", "psql"):
                names.append(child.name())
    return names


@pytest.mark.parametrize("fmt", ["custom", "directory"])
def test_a_dump_blocked_on_a_lock_is_cancelled_as_stalled(
    pg18: PgServer, workdir: Path, fmt: str
) -> None:
    db = f"stall_dump_{fmt}"
    make_sample_db(pg18, db, rows=200, vectors=False)
    env = _env(workdir, pg18, db, fmt)
    with job_service(env) as service, table_locked(pg18, db, "documents"):
        assert _stalled_count(service, db, "backup") == 0
        job, _ = service.submit(JobKind.BACKUP, db)
        finish_job(job)
        assert job.state == JobState.FAILED, job.as_dict()
        assert job.error_code == "stalled"
        assert job.error is not None
        assert job.error.startswith(f"stalled: no progress for {STALL_S} s while dumping"), (
            job.error
        )
        assert "Lock:relation" in job.error  # the reason: pg_dump's session waits on a lock
        assert _stalled_count(service, db, "backup") == 1
        assert _tools_left() == []
    rows = env.catalog.list_backups(db)
    assert [r.status for r in rows] == ["failed"]
    assert rows[0].error is not None and rows[0].error.startswith("stalled:")
    left = list(env.config.storage.path.rglob("*"))
    assert not [p for p in left if p.name.endswith(".partial")], left
    assert [p for p in left if p.is_file()] == []


def test_snapshot_facts_blocked_on_a_lock_stall_the_dump(pg18: PgServer, workdir: Path) -> None:
    """pg_dump finished (the locked table is excluded from the dump), but counting that
    table's rows in the snapshot waits on the lock: the dump makes no progress, it stalls."""
    db = "stall_facts"
    make_sample_db(pg18, db, rows=200, vectors=False)
    doc = target_doc(
        pg18,
        db,
        backup={
            "retries": 0,
            "stall_timeout": STALL_S,
            "extra_args": ["--exclude-table=public.documents"],
        },
    )
    env = open_env(make_config(workdir, [doc]))
    request = BackupRequest(env.config.targets[0], env.config, env.catalog, env.storage)
    with table_locked(pg18, db, "documents"), pytest.raises(StallError) as raised:
        take_backup(request)
    assert str(raised.value).startswith(f"stalled: no progress for {STALL_S} s while dumping")
    assert "Lock:relation" in str(raised.value)
    assert [r.status for r in env.catalog.list_backups(db)] == ["failed"]
    assert not [p for p in env.config.storage.path.rglob("*") if p.is_file()]
    assert _tools_left() == []


def _scratch_database(admin: psycopg.Connection[Any]) -> str | None:
    row = admin.execute(
        "SELECT datname FROM pg_database WHERE datname LIKE 'pgwarden_verify_%'"
    ).fetchone()
    return str(row[0]) if row else None


def _lock_once_created(server: PgServer, table: str, stop: threading.Event) -> None:
    """Another session: takes ACCESS EXCLUSIVE on ``table`` in the drill's scratch database
    as soon as the schema restore created it, and holds it until ``stop`` (or until the drill
    drops the database under it)."""
    with psycopg.connect(server.dsn("postgres"), autocommit=True) as admin:
        while not stop.is_set():
            name = _scratch_database(admin)
            if name is None:
                time.sleep(0.005)
                continue
            with (
                contextlib.suppress(psycopg.OperationalError),
                psycopg.connect(server.dsn(name)) as conn,
            ):
                while not stop.is_set():
                    try:
                        conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
                    except psycopg.errors.UndefinedTable:
                        conn.rollback()
                        time.sleep(0.002)
                        continue
                    stop.wait(120)
                    return
            time.sleep(0.005)


@pytest.mark.parametrize(
    ("jobs", "split", "mode"),
    [
        (1, True, "streamed"),
        (2, True, "streamed into pg_restore, post-data"),
        (2, False, "spooled"),
    ],
    ids=["serial", "split-tables", "spooled"],
)
def test_a_restore_blocked_on_a_lock_is_a_stalled_drill(
    pg18: PgServer, workdir: Path, jobs: int, split: bool, mode: str
) -> None:
    """Streamed into a serial pg_restore (1 job); the data split over 2 connections (bytes
    loaded until the queue is full, then the sessions wait on the lock); or pg_restore
    --jobs=2 reading a spool file (no bytes to count at all: only the server says whether it
    works)."""
    db = f"stall_restore_{jobs}_{split}"
    make_sample_db(pg18, db, rows=200, vectors=False)
    env = _env(workdir, pg18, db, jobs=jobs, split=split)
    env.backup()
    stop = threading.Event()
    blocker = threading.Thread(target=_lock_once_created, args=(pg18, "documents", stop))
    blocker.start()
    try:
        with job_service(env) as service:
            job, _ = service.submit(JobKind.VERIFY, db)
            finish_job(job)
            assert _stalled_count(service, db, "verify") == 1
            assert _stalled_count(service, db, "backup") == 0
            assert _tools_left() == []
    finally:
        stop.set()
        blocker.join(60)
    assert job.state == JobState.FAILED, job.as_dict()
    drill = job.result
    assert isinstance(drill, VerifyOutcome) and drill.stalled
    assert drill.status == DrillStatus.FAILED
    stalled = [c for c in drill.checks if c.name == "stalled"]
    assert len(stalled) == 1, drill.checks
    assert drill.error is not None
    assert drill.error.startswith(f"stalled: no progress for {STALL_S} s while restoring")
    assert "Lock:relation" in drill.error
    assert job.error is not None and "stalled: no progress" in job.error
    with psycopg.connect(pg18.dsn("postgres"), autocommit=True) as admin:
        assert _scratch_database(admin) is None  # dropped whatever happened
    assert [v.status for v in env.catalog.list_verifications(target=db)] == ["failed"]
    assert drill.restore_mode.startswith(mode), drill.restore_mode
    left = list(env.config.storage.path.rglob("*.partial"))
    assert left == []


SLOW_INDEX_SQL = """
CREATE TABLE slow_items (id int PRIMARY KEY, x int NOT NULL);
INSERT INTO slow_items SELECT g, g FROM generate_series(1, {rows}) g;
CREATE FUNCTION slow_key(x int) RETURNS int LANGUAGE sql IMMUTABLE
  AS $$ SELECT x FROM (SELECT pg_sleep(1)) AS s $$;
"""


def test_an_index_build_longer_than_stall_timeout_is_not_a_stall(
    pg18: PgServer, workdir: Path
) -> None:
    """pg_restore reads nothing while it builds an index; its session works: no stall."""
    db = "stall_slow_index"
    rows = 2 * STALL_S + 1  # one second per row: the build outlasts stall_timeout
    make_sample_db(pg18, db, rows=50, vectors=False)
    with psycopg.connect(pg18.dsn(db), autocommit=True) as conn:
        conn.execute(SLOW_INDEX_SQL.format(rows=rows).encode())
        began = time.monotonic()
        conn.execute("CREATE INDEX slow_items_key ON slow_items (slow_key(x))")
        assert time.monotonic() - began >= rows  # the function really sleeps a second a row
    env = _env(workdir, pg18, db)
    env.backup()
    with job_service(env) as service:
        job, _ = service.submit(JobKind.VERIFY, db)
        finish_job(job, timeout=300)
        assert _stalled_count(service, db, "verify") == 0
    drill = job.result
    assert isinstance(drill, VerifyOutcome)
    assert job.state == JobState.SUCCEEDED and drill.passed, drill.as_dict()
    restore = next(c for c in drill.checks if c.name == "restore")
    assert restore.duration_s >= rows  # the index build ran its whole length


def test_stall_timeout_is_checked_and_zero_turns_the_watch_off(workdir: Path) -> None:
    with pytest.raises(ConfigError, match=r"targets\[0\]\.backup\.stall_timeout"):
        make_config(
            workdir, [{"name": "a", "dsn": "postgresql://x@h/a", "backup": {"stall_timeout": -1}}]
        )
    with pytest.raises(ConfigError, match=r"targets\[0\]\.verify\.stall_timeout"):
        make_config(
            workdir, [{"name": "a", "dsn": "postgresql://x@h/a", "verify": {"stall_timeout": "5m"}}]
        )
    config = make_config(workdir, [{"name": "a", "dsn": "postgresql://x@h/a"}])
    assert config.targets[0].backup.stall_timeout == 300
    assert config.targets[0].verify.stall_timeout == 300
    upstream = threading.Event()
    with StallWatch(0, doing="dumping", upstream=upstream) as watch:
        assert watch.cancel is upstream  # the tools obey the caller's cancel only
    with StallWatch(0.2, doing="testing", upstream=upstream) as watch:
        assert watch.cancel is not None and watch.cancel is not upstream
        assert watch.cancel.wait(30)  # nothing moves: it fires
    assert watch.stalled == "stalled: no progress for 0.2 s while testing"
