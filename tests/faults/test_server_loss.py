"""The database server restarted in the middle of a dump: the backup fails cleanly (no partial,
its catalog row ``failed`` with a message naming the lost connection) and the next one succeeds.

A dedicated PostgreSQL 15 (Debian's, with its own pg_dump) is restarted with ``pg_ctl restart``
both ways an operator or a crash does it (``-m fast``: sessions terminated; ``-m immediate``:
the postmaster and backends killed, crash recovery at start).  pg_dump is caught mid-dump by a
table lock held by the test, so the restart always lands while it runs.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pgwarden.catalog import BackupStatus
from tests.faults.conftest import (
    DaemonProcess,
    catalog_rows,
    check_agreement,
    config_text,
    storage_view,
    write_config,
)
from tests.pgservers import PgServer, start_pg15, temp_base
from tests.sampledata import make_sample_db

DB = "fault_server_loss"
LOST = re.compile(
    r"terminat|server closed the connection|connection to server|shut ?down|crash", re.I
)


@pytest.fixture
def own_pg15() -> Iterator[PgServer]:
    """A PostgreSQL 15 of this test's own, that it may restart at will."""
    base = temp_base("pgwarden-fault-pg15-")
    server = start_pg15(base)
    try:
        yield server
    finally:
        if server.is_running():
            server.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)


def _wait_dump_blocked(server: PgServer, timeout: float = 60) -> None:
    """Until pg_dump waits on the table lock the test holds."""
    deadline = time.monotonic() + timeout
    query = (
        f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{DB}' AND wait_event_type = 'Lock'"
    )
    while server.execute(query)[0][0] == 0:
        assert time.monotonic() < deadline, "pg_dump never reached the locked table"
        time.sleep(0.05)


def _backup_through_restart(
    daemon: DaemonProcess, server: PgServer, mode: str, context: str
) -> None:
    locker = psycopg.connect(server.dsn(DB))
    try:
        locker.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        job_id = daemon.submit("backup", DB)
        _wait_dump_blocked(server)
        server.stop(mode)
        server.start()
    finally:
        with contextlib.suppress(psycopg.Error):
            locker.close()
    done = daemon.wait_job(job_id)
    assert done["state"] == "failed", f"{context}: {done}"
    assert LOST.search(done["error"] or ""), f"{context}: unclear error {done['error']!r}"
    row = catalog_rows(daemon.workdir)[0]  # newest first: this attempt
    # the prune that follows every backup may already have cleared the failed run's row
    assert row.status in (BackupStatus.FAILED, BackupStatus.DELETED), f"{context}: {row}"
    assert row.error and LOST.search(row.error), f"{context}: unclear error {row.error!r}"
    assert storage_view(daemon.workdir / "backups").partials == (), context


def test_server_restarted_mid_dump(own_pg15: PgServer, workdir: Path) -> None:
    make_sample_db(own_pg15, DB, rows=300, vectors=False)
    write_config(workdir, config_text(workdir, own_pg15, DB))
    daemon = DaemonProcess(workdir, workdir / "pgwarden.toml")
    daemon.start()
    try:
        for mode in ("fast", "immediate"):
            context = f"pg_ctl restart -m {mode}"
            before = check_agreement(workdir, workdir / "backups", context).manifests
            _backup_through_restart(daemon, own_pg15, mode, context)
            check_agreement(workdir, workdir / "backups", context)
            # the server is back: the next backup succeeds
            done = daemon.wait_job(daemon.submit("backup", DB))
            assert done["state"] == "succeeded", f"{context}: {done}"
            after = check_agreement(workdir, workdir / "backups", context).manifests
            assert len(after - before) == 1, f"{context}: {sorted(before)} -> {sorted(after)}"
    finally:
        daemon.stop()
