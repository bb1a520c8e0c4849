"""The daemon doing its job: a schedule fires a backup (on a fake clock, no long sleeps),
start-up recovery cleans what a crash left, an unusable pg_dump is reported at start-up, and
``pgwarden backups`` lists runs newest first."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from pgwarden.catalog import open_catalog
from pgwarden.service.clock import FakeClock
from pgwarden.service.daemon import Daemon
from tests.pgservers import PG15_BIN, PgServer, free_port
from tests.sampledata import make_sample_db


class SteppingClock(FakeClock):
    """A fake clock whose sleep also yields a little real time to the other threads."""

    def sleep(self, seconds: float, wake: threading.Event | None = None) -> None:
        time.sleep(0.005)
        super().sleep(seconds, wake)


def _write(workdir: Path, server: PgServer, db: str, *, bin_dir: Path | None = None) -> Path:
    path = workdir / "pgwarden.toml"
    path.write_text(
        f'[daemon]\nstate_dir = "{workdir}/state"\nsocket = "{workdir}/ctl.sock"\n'
        f'[metrics]\nlisten = "127.0.0.1:{free_port()}"\n[monitor]\nenabled = false\n'
        f'[storage]\npath = "{workdir}/backups"\n'
        f'[[targets]]\nname = "{db}"\ndsn = "{server.uri(db)}"\n'
        f'bin_dir = "{bin_dir or server.bin_dir}"\n'
        '  [targets.backup]\n  schedule = "0 3 * * *"\n  retries = 0\n'
        "  [targets.verify]\n  enabled = false\n"
        '  [targets.retention]\n  schedule = "off"\n'
    )
    return path


def _run(daemon: Daemon) -> tuple[threading.Thread, dict[str, int]]:
    box: dict[str, int] = {}
    thread = threading.Thread(target=lambda: box.update(code=daemon.run()))
    thread.start()
    assert daemon.started.wait(60)
    return thread, box


def _stop(daemon: Daemon, thread: threading.Thread, box: dict[str, int]) -> None:
    daemon.request_stop()
    thread.join(60)
    assert box.get("code") == 0


def test_schedule_fires_a_backup(pg18: PgServer, workdir: Path) -> None:
    make_sample_db(pg18, "sched", rows=20, vectors=False)
    clock = SteppingClock(datetime(2026, 11, 26, 2, 59, 50, tzinfo=UTC))
    daemon = Daemon(_write(workdir, pg18, "sched"), clock=clock, install_signals=False)
    thread, box = _run(daemon)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert daemon.service is not None
            done = [j for j in daemon.service.runner.jobs() if j.kind == "backup" and j.finished]
            if done:
                break
            assert time.monotonic() < deadline, "the scheduled backup never ran"
            time.sleep(0.1)
        assert done[0].trigger == "scheduled"
        assert done[0].state == "succeeded", done[0].error
    finally:
        _stop(daemon, thread, box)
    with open_catalog(f"sqlite:///{workdir}/state/catalog.db") as catalog:
        [record] = catalog.list_backups("sched")
    assert record.status == "complete"
    assert record.tags == ("scheduled",)


def test_start_up_recovers_from_a_crash(pg18: PgServer, workdir: Path) -> None:
    make_sample_db(pg18, "crashed", rows=5, vectors=False)
    config = _write(workdir, pg18, "crashed")
    state = workdir / "state"
    state.mkdir()
    with open_catalog(f"sqlite:///{state}/catalog.db") as catalog:
        catalog.record_backup_start(
            "ab" * 16,
            target="crashed",
            database="crashed",
            started_at=datetime.now(UTC),
            format="custom",
        )
    leftover = workdir / "backups" / "crashed" / "20261126T030000Z-abababab.dump.zst.partial"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"half a dump")
    daemon = Daemon(config, install_signals=False)
    thread, box = _run(daemon)
    _stop(daemon, thread, box)
    assert not leftover.exists()
    with open_catalog(f"sqlite:///{state}/catalog.db") as catalog:
        [record] = catalog.list_backups("crashed")
    assert record.status == "interrupted"


def test_an_unusable_pg_dump_is_reported_at_start_up(pg18: PgServer, workdir: Path) -> None:
    make_sample_db(pg18, "oldtools", rows=5, vectors=False)
    daemon = Daemon(_write(workdir, pg18, "oldtools", bin_dir=PG15_BIN), install_signals=False)
    thread, box = _run(daemon)
    try:
        deadline = time.monotonic() + 60
        while (
            daemon.metrics.registry.get_sample_value(
                "pgwarden_pg_dump_compatible", {"target": "oldtools"}
            )
            != 0.0
        ):
            assert time.monotonic() < deadline, "pg_dump compatibility never reported"
            time.sleep(0.1)
    finally:
        _stop(daemon, thread, box)
    log = subprocess.run(
        [
            sys.executable,
            "-m",
            "pgwarden.cli",
            "check",
            "-c",
            str(workdir / "pgwarden.toml"),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    items = {r["check"]: r for r in json.loads(log.stdout)["results"]}
    assert items["pg_dump"]["status"] == "fail"


def test_backups_lists_runs_newest_first(pg18: PgServer, workdir: Path) -> None:
    make_sample_db(pg18, "listing", rows=5, vectors=False)
    config = _write(workdir, pg18, "listing")
    cli = [sys.executable, "-m", "pgwarden.cli"]
    for tag in ("first", "second"):
        done = subprocess.run(
            [*cli, "backup", "-c", str(config), "listing", "--tag", tag],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert "backup " in done.stdout
    listed = subprocess.run(
        [*cli, "backups", "-c", str(config), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    rows = json.loads(listed.stdout)
    assert [r["tags"] for r in rows] == [["manual", "second"], ["manual", "first"]]
    assert all(r["status"] == "complete" for r in rows)
    table = subprocess.run(
        [*cli, "backups", "-c", str(config)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert table.splitlines()[0].startswith("ID")
    bad = subprocess.run(
        [*cli, "backup", "-c", str(config), "nosuch"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    assert "unknown target 'nosuch'" in bad.stderr
