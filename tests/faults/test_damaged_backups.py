"""Backups and manifests damaged or removed behind the daemon's back.

Five backups, oldest first: B0 loses its manifest (its file becomes an orphan), B1 gets bytes
flipped in the middle of its file, B2 loses its file, B3 stays intact and passed a drill, B4
(the newest) passed a drill and then gets its manifest truncated.  Then:

- a drill of B1 fails with a checksum message naming the backup;
- ``pgwarden check`` reports each problem (exit 1, no traceback); ``pgwarden backups`` works;
- retention under pressure (every backup 30 days old, ``keep_days = 1``, ``min_keep = 1``)
  never deletes B3, the newest *intact* verified backup, because B4's verdict still says
  "passed": a backup whose manifest cannot be read is not a backup;
- ``pgwarden catalog rebuild`` marks B2 deleted and reports B4's manifest (no traceback).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pgwarden.catalog import BackupStatus
from tests.faults.conftest import (
    MANIFEST,
    DaemonProcess,
    catalog_rows,
    config_text,
    write_config,
)
from tests.pgservers import PgServer
from tests.sampledata import make_sample_db

DB = "fault_damaged"
CLI = [sys.executable, "-m", "pgwarden.cli"]


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*CLI, *args, "-c", str(config)], capture_output=True, text=True, timeout=120, check=False
    )
    assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    return done


def _flip_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    for i in range(middle, min(middle + 16, len(data))):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _age_catalog(workdir: Path, days: int) -> None:
    """Move every recorded time ``days`` into the past (the planner reads the catalog)."""
    with sqlite3.connect(workdir / "state" / "catalog.db") as db:
        rows = db.execute("SELECT id, started_at, finished_at, verified_at FROM backups").fetchall()
        for backup_id, *times in rows:
            moved = [
                None
                if t is None
                else (datetime.fromisoformat(t) - timedelta(days=days)).strftime(
                    "%Y-%m-%d %H:%M:%S.%f"
                )
                for t in times
            ]
            db.execute(
                "UPDATE backups SET started_at = ?, finished_at = ?, verified_at = ? WHERE id = ?",
                (*moved, backup_id),
            )


def _make_history(daemon: DaemonProcess) -> list[str]:
    ids = []
    for _ in range(5):
        done = daemon.wait_job(daemon.submit("backup", DB))
        assert done["state"] == "succeeded", done
        ids.append(str(done["result"]["backup_id"]))
    for ref in ids[3:]:
        answer = daemon.client.call("verify", {"target": DB, "backup": ref})
        drill = daemon.wait_job(answer["job"]["id"])
        assert drill["state"] == "succeeded", drill
    return ids


def _check_storage(config: Path) -> dict[str, Any]:
    done = _cli(config, "check", "--json")
    assert done.returncode == 1, done.stdout + done.stderr
    [storage] = [r for r in json.loads(done.stdout)["results"] if r["check"] == "storage"]
    assert storage["status"] == "fail", storage
    return dict(storage)


def test_damaged_backups_and_manifests(pg18: PgServer, workdir: Path) -> None:
    make_sample_db(pg18, DB, rows=300, vectors=False)
    config = write_config(workdir, config_text(workdir, pg18, DB))
    storage = workdir / "backups" / DB
    daemon = DaemonProcess(workdir, config)
    daemon.start()
    try:
        ids = _make_history(daemon)
        paths = {r.id: storage / str(r.path) for r in catalog_rows(workdir)}
        files = [paths[i] for i in ids]
        manifests = [f.with_name(f.name + MANIFEST) for f in files]
        manifests[0].unlink()
        _flip_middle(files[1])
        files[2].unlink()
        manifests[4].write_bytes(manifests[4].read_bytes()[: manifests[4].stat().st_size // 2])

        answer = daemon.client.call("verify", {"target": DB, "backup": ids[1]})
        drill = daemon.wait_job(answer["job"]["id"])
        assert drill["state"] == "failed", drill
        error = str(drill["error"])
        assert "SHA-256" in error or "checksum" in error.lower(), error
        assert files[1].name in error or ids[1][:8] in error, error

        message = _check_storage(config)["detail"]
        for expected in (files[0].name, files[2].name, manifests[4].name):
            assert expected in message, (expected, message)
        listed = _cli(config, "backups", "--json")
        assert listed.returncode == 0, listed.stderr
    finally:
        daemon.stop()
    _prune_under_pressure(workdir, pg18, config, daemon, ids, files, manifests)
    rebuilt = _cli(config, "catalog", "rebuild", "--json")
    report = json.loads(rebuilt.stdout)
    assert ids[2] in report["marked_deleted"], report
    kinds = {(p["kind"], Path(p["path"]).name) for p in report["problems"] if p["path"]}
    assert ("unreadable_manifest", manifests[4].name) in kinds, report


def _prune_under_pressure(
    workdir: Path,
    pg18: PgServer,
    config: Path,
    daemon: DaemonProcess,
    ids: list[str],
    files: list[Path],
    manifests: list[Path],
) -> None:
    _age_catalog(workdir, 30)
    text = config_text(workdir, pg18, DB).replace("keep_days = 36500", "keep_days = 1")
    write_config(workdir, text)
    daemon.start()
    try:
        done = daemon.wait_job(daemon.submit("prune", DB))
        assert "Traceback" not in daemon.log_tail(500), daemon.log_tail()
        assert done["state"] == "succeeded", done
        warnings = done["result"]["warnings"]
        assert any(manifests[4].name in w for w in warnings), warnings
    finally:
        daemon.stop()
    assert files[3].exists() and manifests[3].exists(), (
        "retention deleted the newest intact verified backup"
    )
    rows = {r.id: r.status for r in catalog_rows(workdir)}
    assert rows[ids[3]] == BackupStatus.COMPLETE, rows
