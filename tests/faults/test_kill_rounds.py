"""SIGKILL the real daemon at random moments of its backups, drills and prunes, round after
round, and check after each restart that nothing was left behind and nothing was lost.

Each round: ask the daemon (over its control socket, as ``pgwarden ctl`` does) for a backup, a
restore drill or a prune (the backup format drawn per round: ``custom``, or ``directory`` with
two ``pg_dump`` workers), wait until the job runs, sleep a random part of that job kind's
measured duration, ``SIGKILL`` the daemon, check that the tools it ran (pg_dump, pg_restore)
do not outlive it, restart it and wait for ``READY=1``.  Then: no ``*.partial`` in storage, no
``pgwarden_verify_*`` scratch database on the server, the catalog agrees with storage (every
complete row has its artifact and manifest, every manifest a complete row, no orphan artifact,
no row still ``running``), and every backup that was complete before the round still is (the
retention never deletes, so a missing one was lost).

Two windows a random kill rarely hits are set up exactly (published but no manifest yet;
manifest written but the row not yet finished), and a kill while pg_dump waits on a lock (it
writes nothing, so only the parent-death signal stops it).
"""

from __future__ import annotations

import random
import sqlite3
import time
from pathlib import Path

from pgwarden.catalog import BackupStatus
from tests.faults.conftest import (
    MANIFEST,
    DaemonProcess,
    catalog_rows,
    check_agreement,
    config_text,
    scratch_databases,
    storage_view,
    wait_gone,
    wait_no_scratch,
    write_config,
)
from tests.pgservers import PgServer
from tests.sampledata import make_sample_db
from tests.test_backup_faults import table_locked

ROUNDS = 20
KINDS = ("backup", "verify", "prune")
WEIGHTS = (2, 2, 1)
FORMATS = (
    'format = "custom"',
    'format = "directory"\n  jobs = 2',
)  # a prune lasts milliseconds: fewer of its rounds hit it running
DB = "fault_kills"


def _make_db(server: PgServer) -> None:
    """A database whose dump and drill take a moment (the filler), with the users table."""
    make_sample_db(server, DB, rows=500, vectors=False)
    server.execute(
        "CREATE TABLE filler AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS body "
        "FROM generate_series(1, 150000) AS g",
        DB,
    )


def _timed(daemon: DaemonProcess, kind: str) -> float:
    """Run one ``kind`` job to its end; how long it ran (seconds)."""
    job_id = daemon.submit(kind, DB)
    started = time.monotonic()
    done = daemon.wait_job(job_id)
    assert done["state"] == "succeeded", done
    return time.monotonic() - started


def test_sigkill_rounds(pg18: PgServer, workdir: Path, fault_seed: int) -> None:
    rng = random.Random(fault_seed)
    _make_db(pg18)
    write_config(workdir, config_text(workdir, pg18, DB))
    storage = workdir / "backups"
    daemon = DaemonProcess(workdir, workdir / "pgwarden.toml")
    daemon.start()
    try:
        # one uninterrupted backup and drill: something to drill, and how long each takes
        durations = {"backup": _timed(daemon, "backup"), "verify": _timed(daemon, "verify")}
        durations["prune"] = 0.05
        kinds_run: list[str] = []
        fmt = FORMATS[0]
        in_flight = 0  # rounds whose job was still running when the daemon died
        debris = 0  # rounds that left a partial or a scratch database for the restart to clean
        for number in range(1, ROUNDS + 1):
            kind = rng.choices(KINDS, WEIGHTS)[0]
            delay = rng.uniform(0, durations[kind])
            shape = fmt.split('"')[1]
            context = (
                f"seed {fault_seed}, round {number} ({kind} {shape}, kill after {delay:.2f} s)"
            )
            before = check_agreement(workdir, storage, context + ", before").manifests
            job_id = daemon.submit(kind, DB)
            daemon.wait_running(job_id)
            time.sleep(delay)
            in_flight += daemon.job(job_id)["state"] == "running"
            children = daemon.kill()
            wait_gone(children, context)
            debris += bool(scratch_databases(pg18, DB) or storage_view(storage).partials)
            # the next round dumps in the format drawn now (directory: pg_dump -j 2 workers)
            fmt = rng.choice(FORMATS)
            write_config(workdir, config_text(workdir, pg18, DB, backup_keys=fmt))
            daemon.start()
            wait_no_scratch(pg18, DB, context)
            after = check_agreement(workdir, storage, context).manifests
            lost = sorted(before - after)
            assert lost == [], f"{context}: complete backups lost: {lost}"
            kinds_run.append(f"{kind} {shape}")
        # the daemon still does its work after all that
        assert _timed(daemon, "backup") > 0
        check_agreement(workdir, storage, f"seed {fault_seed}, after the rounds")
        print(
            f"seed {fault_seed}: {ROUNDS} rounds survived, {in_flight} killed mid-job, "
            f"{debris} left debris that the restart cleaned: {kinds_run}"
        )
        log = daemon.log_path.read_text(errors="replace")
        assert "Traceback" not in log, f"seed {fault_seed}: a traceback in the daemon's log"
        # most delays fall inside the job: a run where few did would prove little
        assert in_flight >= ROUNDS // 5, f"seed {fault_seed}: only {in_flight} kills hit a job"
    finally:
        daemon.stop()


def test_restart_settles_runs_killed_between_publish_and_record(
    pg18: PgServer, workdir: Path
) -> None:
    """The two narrow windows a random kill rarely hits: killed after publishing the artifact
    but before its manifest (an orphan, removed at restart: not a backup), and killed after
    the manifest but before the catalog said so (a complete backup, recorded at restart)."""
    make_sample_db(pg18, "fault_windows", rows=50, vectors=False)
    write_config(workdir, config_text(workdir, pg18, "fault_windows"))
    daemon = DaemonProcess(workdir, workdir / "pgwarden.toml")
    daemon.start()
    ids = []
    for _ in range(2):
        done = daemon.wait_job(daemon.submit("backup", "fault_windows"))
        assert done["state"] == "succeeded", done
        ids.append(done["result"]["backup_id"])
    daemon.stop()
    with sqlite3.connect(workdir / "state" / "catalog.db") as db:
        db.executemany(
            "UPDATE backups SET status = 'running', finished_at = NULL WHERE id = ?",
            [(i,) for i in ids],
        )
        [(orphan,)] = db.execute("SELECT path FROM backups WHERE id = ?", (ids[1],)).fetchall()
    (workdir / "backups" / "fault_windows" / f"{orphan}{MANIFEST}").unlink()
    daemon.start()
    try:
        view = check_agreement(workdir, workdir / "backups", "after the restart")
        rows = {r.id: r.status for r in catalog_rows(workdir)}
        assert rows == {ids[0]: BackupStatus.COMPLETE, ids[1]: BackupStatus.INTERRUPTED}, rows
        assert len(view.manifests) == 1, view
    finally:
        daemon.stop()


def test_a_blocked_pg_dump_does_not_outlive_the_daemon(pg18: PgServer, workdir: Path) -> None:
    """A pg_dump waiting on a lock writes nothing, so a broken pipe never stops it: it must still
    end when the daemon dies, not hold its snapshot and locks until the lock is released."""
    make_sample_db(pg18, "fault_blocked", rows=50, vectors=False)
    write_config(workdir, config_text(workdir, pg18, "fault_blocked"))
    daemon = DaemonProcess(workdir, workdir / "pgwarden.toml")
    daemon.start()
    try:
        with table_locked(pg18, "fault_blocked", "users"):
            daemon.submit("backup", "fault_blocked")
            deadline = time.monotonic() + 60
            query = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            while pg18.execute(query, "fault_blocked")[0][0] == 0:
                assert time.monotonic() < deadline, "pg_dump never reached the locked table"
                time.sleep(0.05)
            children = daemon.kill()
            assert any(c.name() == "pg_dump" for c in children), children
            wait_gone(children, "SIGKILL while pg_dump waits on a lock")
        daemon.start()
        check_agreement(workdir, workdir / "backups", "after the restart")
    finally:
        daemon.stop()
