"""The off-site job in the daemon and from the CLI, against a real S3 endpoint (moto_server):
a backup is followed by its off-site run (before the local prune); a destination that cannot
be reached fails the job (naming it) but not the backup, and leaves the other destination's
copy confirmed; ``ctl offsite`` and the one-shot ``pgwarden offsite sync|list``."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from pgwarden.catalog import open_catalog
from pgwarden.catalog.offsite import CopyState, copies
from pgwarden.cli import main
from pgwarden.config import load
from pgwarden.config.kinds import JobKind
from pgwarden.service.clock import FakeClock
from pgwarden.service.daemon import Daemon
from pgwarden.service.jobs import Job
from pgwarden.service.offsite_job import OffsiteJobOutcome, OffsiteRun, run_offsite
from pgwarden.storage import LocalStorage
from tests.pgservers import PgServer, free_port
from tests.s3server import KEY_ID_ENV, REGION, SECRET_ENV, S3Server
from tests.sampledata import make_sample_db


def _destination(name: str, endpoint: str, bucket: str, **extra: object) -> str:
    lines = [
        "[[offsite]]",
        f'name = "{name}"',
        f'bucket = "{bucket}"',
        'prefix = "vps1/"',
        f'endpoint_url = "{endpoint}"',
        f'region = "{REGION}"',
        'addressing_style = "path"',
        f'access_key_id_env = "{KEY_ID_ENV}"',
        f'secret_access_key_env = "{SECRET_ENV}"',
        *(f"{k} = {json.dumps(v)}" for k, v in extra.items()),
    ]
    return "\n".join(lines) + "\n"


def _write(workdir: Path, server: PgServer, db: str, destinations: str) -> Path:
    path = workdir / "pgwarden.toml"
    path.write_text(
        f'[daemon]\nstate_dir = "{workdir}/state"\nsocket = "{workdir}/ctl.sock"\n'
        f'[metrics]\nlisten = "127.0.0.1:{free_port()}"\n[monitor]\nenabled = false\n'
        f'[storage]\npath = "{workdir}/backups"\n'
        f'[[targets]]\nname = "{db}"\ndsn = "{server.uri(db)}"\n'
        f'bin_dir = "{server.bin_dir}"\n'
        '  [targets.backup]\n  schedule = "0 3 * * *"\n  retries = 0\n'
        "  [targets.verify]\n  enabled = false\n"
        '  [targets.retention]\n  schedule = "off"\n' + destinations
    )
    path.chmod(0o600)
    return path


def _finished(daemon: Daemon, kind: JobKind, timeout: float = 120) -> Job:
    deadline = time.monotonic() + timeout
    while True:
        assert daemon.service is not None
        done = [j for j in daemon.service.runner.jobs() if j.kind == kind and j.finished]
        if done:
            return done[0]
        assert time.monotonic() < deadline, f"no {kind} job finished"
        time.sleep(0.1)


def _keys(s3: S3Server, bucket: str) -> list[str]:
    listed = s3.client().list_objects_v2(Bucket=bucket)
    return sorted(o["Key"] for o in listed.get("Contents", []))


def test_a_daemon_backup_is_followed_by_its_offsite_run(
    pg18: PgServer, workdir: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    db = "offsite_daemon"
    make_sample_db(pg18, db, rows=30, vectors=False)
    closed = f"http://127.0.0.1:{free_port()}"
    config = _write(
        workdir,
        pg18,
        db,
        _destination("moto", s3_server.endpoint, s3_bucket)
        + _destination("down", closed, s3_bucket, retries=0, timeout=5),
    )
    daemon = Daemon(config, install_signals=False)
    box: dict[str, int] = {}
    thread = threading.Thread(target=lambda: box.update(code=daemon.run()))
    thread.start()
    try:
        assert daemon.started.wait(60)
        assert daemon.service is not None
        daemon.service.submit(JobKind.BACKUP, db)
        backup = _finished(daemon, JobKind.BACKUP)
        assert backup.state == "succeeded", backup.error
        offsite = _finished(daemon, JobKind.OFFSITE)
        # one destination is down: the job fails and says which, with the cause
        assert offsite.state == "failed"
        assert offsite.error is not None and "down: " in offsite.error
        assert offsite.error_code == "offsite_failed"
        prune = _finished(daemon, JobKind.PRUNE)
        assert offsite.started_at is not None and prune.started_at is not None
        assert offsite.finished_at is not None and offsite.finished_at <= prune.started_at
        # ctl offsite through the socket, one destination: nothing left to send there
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "pgwarden.cli",
                "ctl",
                "--socket",
                str(workdir / "ctl.sock"),
                "offsite",
                db,
                "--destination",
                "moto",
                "--wait",
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        answer = json.loads(out.stdout)
        assert answer["job"]["state"] == "succeeded"
        assert answer["job"]["result"]["copies"] == []
    finally:
        daemon.request_stop()
        thread.join(60)
    assert box.get("code") == 0
    with open_catalog(f"sqlite:///{workdir}/state/catalog.db") as catalog:
        [record] = catalog.list_backups(db)
        assert record.status == "complete"  # the local backup never depends on the upload
        found = {c.destination: c for c in copies(catalog, target=db)}
    assert found["moto"].state == CopyState.CONFIRMED
    assert found["down"].state == CopyState.FAILED
    assert found["down"].error is not None and found["down"].error.startswith("unreachable")
    assert _keys(s3_server, s3_bucket) == [
        f"vps1/{db}/{record.path}",
        f"vps1/{db}/{record.path}.manifest.json",
    ]


def test_one_shot_sync_and_list(
    pg18: PgServer,
    workdir: Path,
    s3_server: S3Server,
    s3_bucket: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    db = "offsite_oneshot"
    make_sample_db(pg18, db, rows=30, vectors=False)
    closed = f"http://127.0.0.1:{free_port()}"
    good = _destination("moto", s3_server.endpoint, s3_bucket)
    config = _write(
        workdir, pg18, db, good + _destination("down", closed, s3_bucket, retries=0, timeout=5)
    )
    assert main(["backup", "-c", str(config), db]) == 0
    capsys.readouterr()
    # nothing tried yet: the backup is pending on both destinations
    assert main(["offsite", "list", "-c", str(config), db, "--json"]) == 0
    pending = json.loads(capsys.readouterr().out)
    assert sorted((c["destination"], c["state"]) for c in pending) == [
        ("down", "pending"),
        ("moto", "pending"),
    ]
    # one destination down: exit 1, the other one confirmed
    assert main(["offsite", "sync", "-c", str(config), "--json"]) == 1
    [outcome] = json.loads(capsys.readouterr().out)
    assert outcome["target"] == db
    assert not outcome["ok"]
    assert outcome["unreachable"] == ["down"]
    assert [c["destination"] for c in outcome["copies"]] == ["moto"]
    assert outcome["copies"][0]["ok"]
    assert [p["destination"] for p in outcome["prunes"]] == ["moto"]
    # only the good one: nothing left to send, exit 0
    assert main(["offsite", "sync", "-c", str(config), db, "--destination", "moto"]) == 0
    assert "0 copies uploaded" in capsys.readouterr().out
    assert main(["offsite", "sync", "-c", str(config), db, "--destination", "nope"]) == 2
    capsys.readouterr()
    assert main(["offsite", "list", "-c", str(config), "--json"]) == 0
    listed = {c["destination"]: c for c in json.loads(capsys.readouterr().out)}
    assert listed["moto"]["state"] == "confirmed"
    assert listed["down"]["state"] == "failed"
    assert main(["offsite", "list", "-c", str(config)]) == 0
    text = capsys.readouterr().out
    assert "DESTINATION" in text and "confirmed" in text


def test_backups_the_remote_policy_would_delete_at_once_are_not_uploaded(
    pg18: PgServer,
    workdir: Path,
    s3_server: S3Server,
    s3_bucket: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    db = "offsite_doomed"
    make_sample_db(pg18, db, rows=10, vectors=False)
    config = _write(
        workdir,
        pg18,
        db,
        _destination("moto", s3_server.endpoint, s3_bucket)
        + "  [offsite.retention]\n  keep_days = 1\n  min_keep = 1\n",
    )
    for _ in range(3):
        assert main(["backup", "-c", str(config), db]) == 0
    url = f"sqlite:///{workdir}/state/catalog.db"
    with open_catalog(url) as catalog:
        newest, *older = catalog.list_backups(db)
    # the two older ones are 10 days old as far as the catalog knows
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            for record in older:
                connection.execute(
                    text("UPDATE backups SET started_at = :at WHERE id = :id"),
                    {
                        "at": (record.started_at - timedelta(days=10)).replace(tzinfo=None),
                        "id": record.id,
                    },
                )
    finally:
        engine.dispose()
    loaded = load(config)
    with open_catalog(url) as catalog:
        outcome = run_offsite(
            OffsiteRun(loaded.target(db), loaded, catalog, LocalStorage(loaded.storage.path))
        )
        assert outcome.ok, outcome.problems()
        assert [c.backup_id for c in outcome.uploads.copies] == [newest.id]
        assert [c.backup_id for c in copies(catalog, target=db)] == [newest.id]
    [prune] = outcome.prunes
    capsys.readouterr()
    assert main(["offsite", "list", "-c", str(config), "--json"]) == 0
    listed = {c["backup_id"]: c["state"] for c in json.loads(capsys.readouterr().out)}
    assert listed == {newest.id: "confirmed", **{r.id: "skipped" for r in older}}
    assert prune.inventory is not None and prune.inventory.copies == 1


class SteppingClock(FakeClock):
    """A fake clock whose sleep also yields a little real time to the other threads."""

    def sleep(self, seconds: float, wake: threading.Event | None = None) -> None:
        time.sleep(0.005)
        super().sleep(seconds, wake)


def _scheduled_offsite_jobs(daemon: Daemon, count: int, timeout: float = 120) -> list[Job]:
    deadline = time.monotonic() + timeout
    while True:
        assert daemon.service is not None
        done = [
            j
            for j in daemon.service.runner.jobs()
            if j.kind == JobKind.OFFSITE and j.finished and j.trigger == "scheduled"
        ]
        if len(done) >= count:
            return sorted(done, key=lambda j: j.created_at)
        assert time.monotonic() < deadline, f"{count} scheduled offsite runs never finished"
        time.sleep(0.05)


def test_the_hourly_run_retries_only_what_is_pending(
    pg18: PgServer, workdir: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    db = "offsite_hourly"
    make_sample_db(pg18, db, rows=10, vectors=False)
    config = _write(workdir, pg18, db, _destination("moto", s3_server.endpoint, s3_bucket))
    assert main(["backup", "-c", str(config), db]) == 0  # a one-shot backup: not uploaded yet
    clock = SteppingClock(datetime(2026, 12, 3, 5, 40, 50, tzinfo=UTC))
    daemon = Daemon(config, clock=clock, install_signals=False)
    box: dict[str, int] = {}
    thread = threading.Thread(target=lambda: box.update(code=daemon.run()))
    thread.start()
    try:
        assert daemon.started.wait(60)
        [first] = _scheduled_offsite_jobs(daemon, 1)
        assert first.state == "succeeded", first.error
        assert isinstance(first.result, OffsiteJobOutcome)
        assert [c.ok for c in first.result.uploads.copies] == [True]
        # nothing is pending any more: the next hourly run sends no request at all (the
        # endpoint is gone and it still succeeds)
        s3_server.kill()
        second = _scheduled_offsite_jobs(daemon, 2)[1]
        assert second.state == "succeeded", second.error
        assert isinstance(second.result, OffsiteJobOutcome)
        assert second.result.uploads.copies == ()
        assert second.result.prunes == ()
    finally:
        daemon.request_stop()
        thread.join(60)
        s3_server.restart()
    assert box.get("code") == 0
    with open_catalog(f"sqlite:///{workdir}/state/catalog.db") as catalog:
        [copy] = copies(catalog, target=db)
    assert copy.state == CopyState.CONFIRMED


class SlowProxy:
    """A TCP proxy on loopback in front of the S3 server, passing the client's bytes at about
    ``rate`` bytes a second: an upload long enough to be interrupted."""

    def __init__(self, upstream_port: int, rate: int) -> None:
        self.rate = rate
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self.sockets += [client, upstream]
            for args in ((client, upstream, True), (upstream, client, False)):
                thread = threading.Thread(target=self._pump, args=args, daemon=True)
                self.threads.append(thread)
                thread.start()

    def _pump(self, source: socket.socket, sink: socket.socket, slow: bool) -> None:
        try:
            while data := source.recv(16 * 1024):
                sink.sendall(data)
                if slow:
                    time.sleep(len(data) / self.rate)
        except OSError:
            pass
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for end in self.sockets:
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
        for thread in self.threads:
            thread.join(10)
        for end in self.sockets:
            end.close()


def test_a_daemon_stopping_mid_upload_aborts_it(
    pg18: PgServer, workdir: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    db = "offsite_stop"
    pg18.create_database(db)
    with pg18.connect(db) as conn:
        conn.execute("CREATE TABLE blobs (id int PRIMARY KEY, data bytea)")
        conn.execute("ALTER TABLE blobs ALTER data SET STORAGE EXTERNAL")
        with conn.cursor().copy("COPY blobs (id, data) FROM STDIN") as copy:
            for i in range(12):
                copy.write_row((i, os.urandom(1024 * 1024)))
    proxy = SlowProxy(s3_server.port, rate=1024 * 1024)
    try:
        config = _write(
            workdir,
            pg18,
            db,
            _destination(
                "moto", f"http://127.0.0.1:{proxy.port}", s3_bucket, part_size=5 * 1024 * 1024
            ),
        )
        text_ = config.read_text().replace("[daemon]\n", "[daemon]\nshutdown_timeout = 1\n", 1)
        config.write_text(text_)
        assert main(["backup", "-c", str(config), db]) == 0
        daemon = Daemon(config, install_signals=False)
        box: dict[str, int] = {}
        thread = threading.Thread(target=lambda: box.update(code=daemon.run()))
        thread.start()
        try:
            assert daemon.started.wait(60)
            assert daemon.service is not None
            job, _ = daemon.service.submit(JobKind.OFFSITE, db)
            deadline = time.monotonic() + 120
            while not job.progress.get("bytes"):  # the first part is stored
                assert not job.finished, job.error
                assert time.monotonic() < deadline, "the upload never made progress"
                time.sleep(0.05)
        finally:
            daemon.request_stop()
            thread.join(60)
        assert box.get("code") == 0
        assert job.state == "cancelled", job.error
    finally:
        proxy.close()
    client = s3_server.client()
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    assert client.list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0
    with open_catalog(f"sqlite:///{workdir}/state/catalog.db") as catalog:
        [copy] = copies(catalog, target=db)
        [record] = catalog.list_backups(db)
    assert copy.state == CopyState.FAILED
    assert copy.error is not None and "cancelled" in copy.error
    assert record.status == "complete"
