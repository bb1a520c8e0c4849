"""One-shot runs own their debris through run locks (issue 16, item 1).

A ``pgwarden backup`` killed from the shell leaves a ``.partial`` and a ``running`` row that
the next one-shot command reaps; a live one-shot backup's partial and row (and a restore's
spool) survive a daemon start-up sweep and other one-shot commands.  Real processes, real
signals, a real server.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from pgwarden.metrics import Metrics
from pgwarden.service import recovery
from pgwarden.service.state import ServiceState
from pgwarden.storage.locks import BackupLocks
from tests.helpers import Env, daemon_config_text, make_config, open_env, target_doc, write_config
from tests.pgservers import PgServer
from tests.sampledata import make_sample_db
from tests.test_backup_faults import table_locked

CLI = [sys.executable, "-m", "pgwarden.cli"]


def _config_file(workdir: Path, server: PgServer, db: str) -> Path:
    return write_config(workdir, daemon_config_text(workdir, server, db, 0))


def _backups(config: Path) -> list[dict[str, Any]]:
    done = subprocess.run(
        [*CLI, "backups", "-c", str(config), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows


def _partials(workdir: Path) -> list[Path]:
    return sorted((workdir / "backups").rglob("*.partial"))


def _start_backup(config: Path, db: str) -> tuple[subprocess.Popen[str], psutil.Process]:
    """A one-shot ``pgwarden backup`` that has started pg_dump (blocked on a table lock)."""
    proc = subprocess.Popen(
        [*CLI, "backup", "-c", str(config), db],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        for child in psutil.Process(proc.pid).children(recursive=True):
            try:
                if child.name() == "pg_dump":
                    time.sleep(0.3)  # pg_dump has opened NAME.partial and waits on the lock
                    return proc, child
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("pg_dump never started")


def test_killed_oneshot_backup_is_reaped_by_the_next_oneshot(pg18: PgServer, workdir: Path) -> None:
    make_sample_db(pg18, "killed_oneshot", rows=200)
    config = _config_file(workdir, pg18, "killed_oneshot")
    with table_locked(pg18, "killed_oneshot", "documents"):
        proc, dump = _start_backup(config, "killed_oneshot")
        assert len(_partials(workdir)) == 1
        proc.send_signal(signal.SIGKILL)  # the one-shot dies at once, no cleanup of any kind
        proc.communicate(timeout=30)
        # pg_dump dies with its parent (parent-death signal) and may be gone already
        with contextlib.suppress(psutil.NoSuchProcess):
            dump.kill()
            dump.wait(30)
    rows = _backups(config)  # a one-shot command: reaps the dead run
    assert [r["status"] for r in rows] == ["interrupted"], rows
    assert rows[0]["error"]
    assert _partials(workdir) == []
    assert list((workdir / "state" / "locks").glob("*.run.lock")) == []


def test_live_oneshot_backup_and_restore_spool_survive_sweeps(
    pg18: PgServer, workdir: Path
) -> None:
    make_sample_db(pg18, "live_oneshot", rows=200)
    config = _config_file(workdir, pg18, "live_oneshot")
    env = open_env(make_config(workdir, [target_doc(pg18, "live_oneshot")]))
    first = env.backup()
    # a restore of the first backup is spooling: it holds the backup's shared lock
    spool = first.path.with_name(first.path.name + ".restore-0123abcd.partial")
    spool.write_bytes(b"spooled")
    with subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\nfrom pgwarden.storage.locks import BackupLocks\n"
            f"with BackupLocks({str(workdir / 'state')!r}).shared({first.backup_id!r}):\n"
            "    print('held', flush=True)\n    sys.stdin.read()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        _while_a_restore_spools(pg18, workdir, env, holder, spool)
    assert not BackupLocks(workdir / "state").in_use(first.backup_id)
    _backups(config)  # the restore is dead now: its spool goes
    assert _partials(workdir) == []
    assert os.listdir(workdir / "backups" / "live_oneshot")


def _while_a_restore_spools(
    pg18: PgServer, workdir: Path, env: Env, holder: subprocess.Popen[str], spool: Path
) -> None:
    """A one-shot backup runs (paused by a table lock) beside a restore's spool: neither
    another one-shot command nor a daemon starting up touches them."""
    config = workdir / "pgwarden.toml"
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with table_locked(pg18, "live_oneshot", "documents"):
            proc, _dump = _start_backup(config, "live_oneshot")
            live = [p for p in _partials(workdir) if p != spool]
            assert len(live) == 1
            _backups(config)  # another one-shot's reap
            state = ServiceState.open(env.config, Metrics())
            try:
                recovery.recover(state)  # a daemon starting up beside them
            finally:
                state.catalog.close()
            assert sorted(_partials(workdir)) == sorted([*live, spool])
            running = [r for r in _backups(config) if r["status"] == "running"]
            assert len(running) == 1, running
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        statuses = sorted(r["status"] for r in _backups(config))
        assert statuses == ["complete", "complete"]
        assert _partials(workdir) == [spool]  # its restore still runs
    finally:
        holder.kill()
        holder.wait(10)
