"""The catalog file deleted: between runs, and behind the running daemon's back.

The storage holds the truth: the daemon rebuilds an empty catalog from the manifests at
start-up, and notices within a second a catalog file deleted while it runs (it reopens and
rebuilds it, so its later records do not go to the unlinked file); ``pgwarden catalog
rebuild`` does it on demand.  ``pgwarden backups`` then lists the same backups (ids, status,
tags, pins, drill verdicts, checksums, sizes) as before the loss, and so does ``ctl backups``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.faults.conftest import DaemonProcess, check_agreement, config_text, write_config
from tests.pgservers import PgServer
from tests.sampledata import make_sample_db

DB = "fault_catalog_loss"
CLI = [sys.executable, "-m", "pgwarden.cli"]
KEYS = ("id", "status", "tags", "pinned", "verify_status", "sha256", "size_bytes")


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args, "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _listed(config: Path) -> list[tuple[Any, ...]]:
    done = _cli(config, "backups", "--json")
    assert done.returncode == 0, done.stderr
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return sorted(tuple(str(r.get(k)) for k in KEYS) for r in rows)


def _lose_catalog(workdir: Path) -> None:
    for path in (workdir / "state").glob("catalog.db*"):
        path.unlink()


def _rebuild(config: Path) -> None:
    done = _cli(config, "catalog", "rebuild")
    assert done.returncode == 0, done.stdout + done.stderr


def _history(daemon: DaemonProcess) -> None:
    """Two backups, a drill of the newest, a pin on the oldest."""
    ids = []
    for _ in range(2):
        done = daemon.wait_job(daemon.submit("backup", DB))
        assert done["state"] == "succeeded", done
        ids.append(done["result"]["backup_id"])
    drill = daemon.wait_job(daemon.submit("verify", DB))
    assert drill["state"] == "succeeded", drill
    daemon.client.call("pin", {"target": DB, "backup": ids[0]})


def test_catalog_deleted_between_runs(pg18: PgServer, workdir: Path) -> None:
    make_sample_db(pg18, DB, rows=100, vectors=False)
    config = write_config(workdir, config_text(workdir, pg18, DB))
    daemon = DaemonProcess(workdir, config)
    daemon.start()
    try:
        _history(daemon)
        before = _listed(config)
        daemon.stop()
        _lose_catalog(workdir)
        daemon.start()  # finds an empty catalog beside manifests: rebuilds it at start-up
        assert "rebuilt it from the manifests" in daemon.log_tail(200)
        assert _listed(config) == before
        check_agreement(workdir, workdir / "backups", "after the start-up rebuild")
        daemon.stop()
        _lose_catalog(workdir)
        _rebuild(config)  # the command does the same
        assert _listed(config) == before
        daemon.start()
        done = daemon.wait_job(daemon.submit("backup", DB))
        assert done["state"] == "succeeded", done
        assert len(_listed(config)) == len(before) + 1
        check_agreement(workdir, workdir / "backups", "after the command's rebuild")
    finally:
        daemon.stop()


def _wait_reopened(daemon: DaemonProcess, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while "rebuilt it from the manifests" not in daemon.log_tail(50):
        assert time.monotonic() < deadline, f"the daemon never noticed: {daemon.log_tail()}"
        time.sleep(0.1)


def test_catalog_deleted_behind_the_running_daemon(pg18: PgServer, workdir: Path) -> None:
    make_sample_db(pg18, DB, rows=100, vectors=False)
    config = write_config(workdir, config_text(workdir, pg18, DB))
    daemon = DaemonProcess(workdir, config)
    daemon.start()
    try:
        _history(daemon)
        before = _listed(config)
        _lose_catalog(workdir)
        _wait_reopened(daemon)  # the main loop notices within a tick, reopens and rebuilds
        assert _listed(config) == before
        # what the daemon records from now on is in the catalog every command reads
        done = daemon.wait_job(daemon.submit("backup", DB))
        assert done["state"] == "succeeded", done
        after = _listed(config)
        assert len(after) == len(before) + 1 and set(before) <= set(after), (before, after)
        answer = daemon.client.call("backups", {"target": DB})
        assert sorted(b["id"] for b in answer["backups"]) == sorted(r[0] for r in after)
        daemon.stop()
        daemon.start()
        assert _listed(config) == after
        check_agreement(workdir, workdir / "backups", "after the restart")
    finally:
        daemon.stop()
