"""Drills own their catalog row through a run lock, like backups (issue 16, item 1, drills).

A one-shot ``pgwarden verify`` running beside a real daemon's start-up keeps its ``running`` row
and its scratch database; SIGKILLed, the next run reaps both: the next one-shot command marks
its row interrupted, the next drill drops its scratch database.  Real processes, real
signals, a real server.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pgwarden import config as config_mod
from pgwarden.catalog import DrillStatus
from pgwarden.restore import scratchlock
from pgwarden.restore.drillreap import RUN_LOCK_KEY, reap_dead_drills
from tests.helpers import Env, daemon_config_text, open_env, write_config
from tests.pgservers import PgServer, free_port
from tests.sampledata import make_sample_db
from tests.test_daemon_lifecycle import running_daemon

CLI = [sys.executable, "-m", "pgwarden.cli"]
SLEEP_GUC = "pgwarden_test.row_sleep"

#: restoring the data of ``slow`` sleeps per row in a scratch database while the role's
#: setting says so (set for the killed drill, reset for the next one)
SLOW_TABLE = rf"""
CREATE FUNCTION slow_ok(v int) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF current_database() LIKE 'pgwarden\_verify\_%' THEN
        PERFORM pg_sleep(coalesce(nullif(current_setting('{SLEEP_GUC}', true), ''), '0')::float);
    END IF;
    RETURN true;
END $$;
CREATE TABLE slow (id int PRIMARY KEY, v int CHECK (slow_ok(v)));
INSERT INTO slow SELECT g, g FROM generate_series(1, 600) g;
"""


def _config(workdir: Path, server: PgServer, db: str, port: int = 0) -> Path:
    """The daemon's config file, which the one-shot commands share."""
    return write_config(workdir, daemon_config_text(workdir, server, db, port))


def _scratch_left(server: PgServer) -> list[str]:
    rows = server.execute("SELECT datname FROM pg_database WHERE datname LIKE 'pgwarden_verify_%'")
    return sorted(str(r[0]) for r in rows)


def _drill_rows(env: Env) -> list[tuple[DrillStatus, dict[str, Any]]]:
    return [(d.status, d.details) for d in reversed(env.catalog.list_verifications())]


def _loading_backend(server: PgServer) -> int | None:
    """The backend loading rows into a scratch database (``COPY``), if any."""
    rows = server.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname LIKE 'pgwarden\\_verify\\_%'"
        " AND query LIKE 'COPY %' AND state = 'active'"
    )
    return int(str(rows[0][0])) if rows else None


def _start_drill(
    config: Path, server: PgServer, db: str, log: Path
) -> tuple[subprocess.Popen[bytes], int]:
    """A one-shot ``pgwarden verify`` restoring the slow table's data; the server backend
    loading it."""
    with log.open("wb") as out:
        proc = subprocess.Popen([*CLI, "verify", "-c", str(config), db], stdout=out, stderr=out)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        if (backend := _loading_backend(server)) is not None:
            return proc, backend
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the drill never started restoring data")


def _wait_released(server: PgServer, name: str) -> None:
    """Until the server ended the killed drill's session (which held the scratch lock)."""
    deadline = time.monotonic() + 30
    with server.connect() as conn:
        while scratchlock.held_elsewhere(conn, name):
            assert time.monotonic() < deadline, "the killed drill's session never ended"
            time.sleep(0.05)


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


def _start_daemon_beside(workdir: Path, config: Path, db: str, port: int) -> None:
    """``pgwarden run`` until its start-up is complete: READY=1 (recovery done), then its
    start-up server checks (the scratch database sweep) done for ``db``; then stopped."""
    with running_daemon(workdir, config.read_text()) as (daemon, systemd, _path):
        systemd.wait_for("READY=1")
        checked = f'pgwarden_pg_dump_compatible{{target="{db}"}} 1.0'
        deadline = time.monotonic() + 60
        while checked not in _scrape(port):
            assert time.monotonic() < deadline, "the start-up checks never ran"
            time.sleep(0.1)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(60) == 0


def _oneshot(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args, "-c", str(config)], capture_output=True, text=True, timeout=300, check=False
    )


def test_a_live_oneshot_drill_survives_start_up_and_a_killed_one_is_reaped(
    pg18: PgServer, workdir: Path
) -> None:
    db = "drill_runlock"
    make_sample_db(pg18, db, rows=100, vectors=False)
    pg18.execute(SLOW_TABLE, db)
    port = free_port()
    config = _config(workdir, pg18, db, port)
    env = open_env(config_mod.load(config))
    env.backup()
    pg18.execute(f"ALTER ROLE postgres SET {SLEEP_GUC} = '0.1'")
    try:
        proc, backend = _start_drill(config, pg18, db, workdir / "drill.log")
        try:
            [scratch] = _scratch_left(pg18)
            [(status, details)] = _drill_rows(env)
            assert status == DrillStatus.RUNNING and details[RUN_LOCK_KEY].startswith("drill-")
            # another one-shot command, and a real daemon starting up beside the live drill
            assert _oneshot(config, "backups").returncode == 0
            _start_daemon_beside(workdir, config, db, port)
            assert [s for s, _ in _drill_rows(env)] == [DrillStatus.RUNNING]
            assert _scratch_left(pg18) == [scratch]
            assert proc.poll() is None
        finally:
            proc.send_signal(signal.SIGKILL)  # the one-shot dies at once, no cleanup at all
            proc.wait(30)
    finally:
        pg18.execute(f"ALTER ROLE postgres RESET {SLEEP_GUC}")
    _wait_released(pg18, scratch)
    assert [s for s, _ in _drill_rows(env)] == [DrillStatus.RUNNING]  # nobody looked yet
    done = _oneshot(config, "verify", db, "--json")  # the next run reaps, then drills
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "passed"
    assert [s for s, _ in _drill_rows(env)] == [DrillStatus.INTERRUPTED, DrillStatus.PASSED]
    assert _scratch_left(pg18) == []
    # the killed drill's sessions end with it (the server notices the closed sockets)
    deadline = time.monotonic() + 30
    while backend in [int(str(r[0])) for r in pg18.execute("SELECT pid FROM pg_stat_activity")]:
        assert time.monotonic() < deadline, "the killed drill's loading session never ended"
        time.sleep(0.1)
    assert list((workdir / "state" / "locks").glob("drill-*.run.lock")) == []


def test_a_running_drill_row_without_a_run_lock_is_reaped(pg18: PgServer, workdir: Path) -> None:
    """Rows recorded before drills held run locks name none: nothing alive can own them."""
    db = "drill_oldrow"
    make_sample_db(pg18, db, rows=20, vectors=False)
    env = open_env(config_mod.load(_config(workdir, pg18, db)))
    backup = env.backup()
    old = env.catalog.start_verification(backup.backup_id, datetime.now(UTC))
    assert reap_dead_drills(env.config, env.catalog) == [old.id]
    assert [s for s, _ in _drill_rows(env)] == [DrillStatus.INTERRUPTED]
    assert reap_dead_drills(env.config, env.catalog) == []
