"""Backups under real faults: concurrent writes, a killed pg_dump, a stopped server, a full disk.

Each fault must leave no ``.partial`` file and no complete-looking backup, record the failure,
and the next run must succeed once the fault is gone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import psycopg
import pytest

from pgwarden.archive.manifest import Manifest
from pgwarden.backup.take import BackupRequest, take_backup
from pgwarden.errors import BackupError, InsufficientSpaceError, PgwardenError, ToolError
from tests.helpers import Env, make_config, open_env, target_doc
from tests.pgservers import PgServer, start_pg15, temp_base
from tests.sampledata import make_sample_db


def _env(
    workdir: Path, server: PgServer, db: str, storage: Path | None = None, **backup: object
) -> Env:
    extra = {"storage": {"path": str(storage), "min_free_margin": 0}} if storage else {}
    return open_env(
        make_config(workdir, [target_doc(server, db, backup={"retries": 0, **backup})], **extra)
    )


def _request(env: Env, cancel: threading.Event | None = None) -> BackupRequest:
    return BackupRequest(env.config.targets[0], env.config, env.catalog, env.storage, cancel=cancel)


def _artifacts(env: Env) -> list[Path]:
    root = env.config.storage.path
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def _assert_nothing_left(env: Env) -> None:
    files = _artifacts(env)
    assert not [p for p in files if p.name.endswith(".partial")], files
    manifests = [p for p in files if p.name.endswith(".manifest.json")]
    dumps = [p for p in files if not p.name.endswith(".manifest.json")]
    assert len(dumps) == len(manifests), files


def _complete(env: Env) -> list[str]:
    return [r.id for r in env.catalog.list_backups() if r.status == "complete"]


@contextmanager
def table_locked(server: PgServer, db: str, table: str) -> Iterator[None]:
    """Hold ACCESS EXCLUSIVE on ``table``: pg_dump blocks on it until released."""
    conn = psycopg.connect(server.dsn(db))
    conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
    try:
        yield
    finally:
        with contextlib.suppress(psycopg.Error):  # the server may be gone on purpose
            conn.rollback()
        conn.close()


def _wait_for_pg_dump(timeout: float = 30) -> psutil.Process:
    me = psutil.Process()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in me.children(recursive=True):
            try:
                if child.name() == "pg_dump":
                    return child
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.05)
    raise AssertionError("pg_dump never started")


def _in_thread(fn, *args):  # type: ignore[no-untyped-def]
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["result"] = fn(*args)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, box


def test_row_counts_match_the_snapshot_under_concurrent_inserts(
    pg18: PgServer, workdir: Path
) -> None:
    make_sample_db(pg18, "busy", rows=3000)
    env = _env(workdir, pg18, "busy")
    stop = threading.Event()
    inserted = [0]

    def writer() -> None:
        with psycopg.connect(pg18.dsn("busy"), autocommit=True) as conn:
            while not stop.is_set():
                conn.execute(
                    "INSERT INTO users (email, display_name, created_at) "
                    "VALUES (md5(random()::text) || '@x.org', 'w', now())"
                )
                inserted[0] += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.2)
        outcome = take_backup(_request(env))
    finally:
        stop.set()
        thread.join()
    assert inserted[0] > 0
    manifest = Manifest.load(outcome.manifest_path)
    recorded = {t.qualified: t.rows for t in manifest.tables}["public.users"]
    # restore the archive and count: the file holds exactly what the manifest says
    pg18.create_database("busy_restored")
    plain = outcome.path.with_suffix("")
    subprocess.run(["zstd", "-q", "-d", "-f", "-o", str(plain), str(outcome.path)], check=True)
    subprocess.run(
        [
            str(pg18.bin_dir / "pg_restore"),
            "--no-owner",
            "-d",
            pg18.dsn("busy_restored"),
            str(plain),
        ],
        check=True,
        capture_output=True,
    )
    restored = pg18.execute("SELECT count(*) FROM users", "busy_restored")[0][0]
    assert restored == recorded
    live = pg18.execute("SELECT count(*) FROM users", "busy")[0][0]
    assert live > recorded


def test_killed_pg_dump_leaves_nothing_and_next_run_succeeds(pg18: PgServer, workdir: Path) -> None:
    make_sample_db(pg18, "killme", rows=200)
    env = _env(workdir, pg18, "killme")
    with table_locked(pg18, "killme", "documents"):
        thread, box = _in_thread(take_backup, _request(env))
        dump = _wait_for_pg_dump()
        time.sleep(0.3)
        dump.send_signal(signal.SIGKILL)
        time.sleep(0.3)
    thread.join(60)
    assert isinstance(box.get("error"), ToolError | BackupError), box
    _assert_nothing_left(env)
    assert _complete(env) == []
    statuses = [r.status for r in env.catalog.list_backups()]
    assert statuses == ["failed"]
    assert env.catalog.list_backups()[0].error
    take_backup(_request(env))
    assert len(_complete(env)) == 1
    _assert_nothing_left(env)


def test_cancel_during_dump_is_interrupted_and_clean(pg18: PgServer, workdir: Path) -> None:
    make_sample_db(pg18, "cancelme", rows=100)
    env = _env(workdir, pg18, "cancelme")
    cancel = threading.Event()
    with table_locked(pg18, "cancelme", "documents"):
        thread, box = _in_thread(take_backup, _request(env, cancel))
        dump = _wait_for_pg_dump()
        cancel.set()
        dump.wait(30)
    thread.join(60)
    assert isinstance(box.get("error"), PgwardenError)
    _assert_nothing_left(env)
    assert [r.status for r in env.catalog.list_backups()] == ["interrupted"]


def test_server_stopped_mid_run_then_recovers(workdir: Path) -> None:
    server = start_pg15(temp_base("pgwarden-stop-"))
    try:
        make_sample_db(server, "stopme", rows=200, vectors=False)
        env = _env(workdir, server, "stopme")
        # pg_dump 15 matches this server; the test is about the server going away
        with table_locked(server, "stopme", "users"):
            thread, box = _in_thread(take_backup, _request(env))
            _wait_for_pg_dump()
            time.sleep(0.3)
            server.stop("immediate")
        thread.join(60)
        assert isinstance(box.get("error"), PgwardenError), box
        _assert_nothing_left(env)
        assert _complete(env) == []
        server.start()
        take_backup(_request(env))
        assert len(_complete(env)) == 1
    finally:
        if server.is_running():
            server.stop("immediate")
        shutil.rmtree(server.socket_dir, ignore_errors=True)


def test_full_disk_leaves_nothing_and_next_run_succeeds(
    pg18: PgServer, workdir: Path, small_disk: Path
) -> None:
    make_sample_db(pg18, "fill", rows=50, vectors=False)
    env = _env(workdir, pg18, "fill", storage=small_disk)
    take_backup(_request(env))  # small: the estimate for the next run is this size
    pg18.execute(
        "CREATE TABLE blob AS SELECT decode(string_agg(md5(random()::text), ''), 'hex') AS b "
        "FROM generate_series(1, 1000000)",
        "fill",
    )  # 16 MB of incompressible bytes
    with pytest.raises(BackupError) as info:
        take_backup(_request(env))
    assert "No space left" in str(info.value) or "space" in str(info.value).lower()
    _assert_nothing_left(env)
    assert len(_complete(env)) == 1
    assert env.catalog.list_backups()[0].status == "failed"
    pg18.execute("DROP TABLE blob", "fill")
    take_backup(_request(env))
    assert len(_complete(env)) == 2
    _assert_nothing_left(env)


def test_space_check_refuses_before_dumping(
    pg18: PgServer, workdir: Path, small_disk: Path
) -> None:
    make_sample_db(pg18, "toobig", rows=50, vectors=False)
    pg18.execute(
        "CREATE TABLE pad AS SELECT repeat('x', 1000) AS t FROM generate_series(1, 8000)", "toobig"
    )
    env = _env(workdir, pg18, "toobig", storage=small_disk)
    with pytest.raises(InsufficientSpaceError, match="not enough free space"):
        take_backup(_request(env))
    assert env.catalog.list_backups() == []
    _assert_nothing_left(env)


def test_bad_password_is_reported_without_the_password(pg18: PgServer, workdir: Path) -> None:
    make_sample_db(pg18, "secretdb", rows=10, vectors=False)
    config = make_config(
        workdir,
        [
            {
                **target_doc(pg18, "secretdb"),
                "dsn": f"postgresql://nobody_here@127.0.0.1:{pg18.port}/secretdb",
                "password_env": "PGWARDEN_TEST_CANARY",
                "backup": {"retries": 1, "retry_backoff": 0},
            }
        ],
    )
    env = open_env(config)
    os.environ["PGWARDEN_TEST_CANARY"] = "canary-Pa55word"
    try:
        with pytest.raises(BackupError) as info:
            take_backup(_request(env))
    finally:
        del os.environ["PGWARDEN_TEST_CANARY"]
    assert "canary-Pa55word" not in str(info.value)
    assert "cannot connect" in str(info.value)
