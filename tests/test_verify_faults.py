"""Restore drills under attack and under faults: an archive swapped with a forged checksum, a
drill killed with SIGKILL during its restore, a drill stopped with SIGTERM."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import tomli_w

from pgwarden import config as config_mod
from pgwarden.restore import scratchlock
from pgwarden.restore.drill import (
    VerifyRequest,
    drop_leftover_scratch_databases,
    run_verification,
)
from tests.helpers import open_env, target_doc, write_config
from tests.pgservers import PgServer
from tests.sampledata import make_sample_db

#: a CHECK constraint that sleeps only inside a drill's scratch database: a slow restore
SLOW_TABLE = r"""
CREATE FUNCTION slow_ok(v int) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF current_database() LIKE 'pgwarden\_verify\_%' THEN PERFORM pg_sleep(0.05); END IF;
    RETURN true;
END $$;
CREATE TABLE slow (id int PRIMARY KEY, v int CHECK (slow_ok(v)));
INSERT INTO slow SELECT g, g FROM generate_series(1, 600) g;
"""


def _config(workdir: Path, server: PgServer, db: str, **verify: Any) -> Path:
    doc = {
        "daemon": {
            "state_dir": str(workdir / "state"),
            "socket": str(workdir / "ctl.sock"),
            "log_level": "warning",
        },
        "storage": {"path": str(workdir / "backups")},
        "metrics": {"listen": "127.0.0.1:0"},
        "targets": [target_doc(server, db, backup={"retries": 0}, verify=verify)],
    }
    workdir.mkdir(parents=True, exist_ok=True)
    return write_config(workdir, tomli_w.dumps(doc))


def _scratch_left(server: PgServer) -> list[str]:
    return [d for d in server.databases() if d.startswith("pgwarden_verify_")]


def test_changed_embeddings_fail_the_vector_probes(pg18: PgServer, workdir: Path) -> None:
    """Someone with write access replaces a backup by another database's dump and forges the
    manifest's checksum: same tables, same ids, same counts -- only the embeddings differ.
    Checksum, restore and counts pass; the recorded nearest neighbours do not come back."""
    make_sample_db(pg18, "emb_a", rows=300)
    pg18.drop_database("emb_b")
    pg18.execute("CREATE DATABASE emb_b TEMPLATE emb_a")
    # every document takes the embedding of the next one: ids and counts unchanged
    pg18.execute(
        "UPDATE documents d SET embedding = n.embedding FROM documents n "
        "WHERE n.id = d.id % 300 + 1",
        "emb_b",
    )
    env_a = open_env(config_mod.load(_config(workdir / "a", pg18, "emb_a")))
    env_b = open_env(config_mod.load(_config(workdir / "b", pg18, "emb_b")))
    a, b = env_a.backup(), env_b.backup()
    shutil.copyfile(b.path, a.path)
    manifest = json.loads(a.manifest_path.read_text())
    manifest["sha256"] = hashlib.sha256(a.path.read_bytes()).hexdigest()
    manifest["size_bytes"] = a.path.stat().st_size
    a.manifest_path.write_text(json.dumps(manifest, indent=2))

    outcome = run_verification(
        VerifyRequest(
            env_a.config.targets[0],
            env_a.config,
            env_a.catalog,
            env_a.storage,
            raise_on_failure=False,
        )
    )
    by_name = {c.name: c for c in outcome.checks}
    assert by_name["checksum"].passed and by_name["restore"].passed
    assert by_name["row_counts"].passed
    probes = by_name["vector_probes"]
    assert not probes.passed
    assert probes.failures, probes
    first = probes.failures[0]
    assert first["item"].startswith("public.documents.embedding id=")
    assert first["expected"] != first["actual"]
    assert [c.name for c in outcome.failed_checks] == ["vector_probes"]
    assert not _scratch_left(pg18)


def _drill_process(config: Path, log: Path) -> subprocess.Popen[bytes]:
    code = (
        "import sys\n"
        "from pgwarden import config as c\n"
        "from pgwarden.restore.drill import VerifyRequest, run_verification\n"
        "from pgwarden.catalog import open_catalog\n"
        "from pgwarden.storage import LocalStorage\n"
        f"cfg = c.load({str(config)!r})\n"
        "cat = open_catalog(cfg.daemon.effective_catalog_url)\n"
        "run_verification(VerifyRequest(cfg.targets[0], cfg, cat, LocalStorage(cfg.storage.path)))\n"
    )
    with log.open("wb") as err:
        return subprocess.Popen([sys.executable, "-c", code], stdout=err, stderr=err)


def _wait_released(server: PgServer, name: str) -> None:
    """Until the server has ended the session of a killed drill, which held its lock."""
    deadline = time.monotonic() + 10
    with server.connect() as conn:
        while scratchlock.held_elsewhere(conn, name):
            assert time.monotonic() < deadline, "the killed drill's session never ended"
            time.sleep(0.05)


class _Loading:
    """What loads a drill's data: ``pg_restore`` (``split_tables = false``), or the drill's own
    connections, whose backends run ``COPY`` in the scratch database."""

    def __init__(self, server: PgServer, tool: psutil.Process | None) -> None:
        self.server, self.tool = server, tool

    def is_running(self) -> bool:
        if self.tool is not None:
            return bool(self.tool.is_running())
        return bool(_loader_backends(self.server))

    def wait(self, timeout: float) -> None:
        if self.tool is not None:
            self.tool.wait(timeout)
            return
        deadline = time.monotonic() + timeout
        while self.is_running():
            assert time.monotonic() < deadline, "the data is still being loaded"
            time.sleep(0.1)


def _loader_backends(server: PgServer) -> list[int]:
    rows = server.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname LIKE 'pgwarden\\_verify\\_%'"
        " AND application_name LIKE 'pgwarden-restore-%' AND query LIKE 'COPY %'"
    )
    return [int(str(r[0])) for r in rows]


def _wait_for_restore(proc: subprocess.Popen[bytes], server: PgServer, split: bool) -> _Loading:
    """What loads the drill's data, once it has been at it for a moment."""
    deadline = time.monotonic() + 60
    parent = psutil.Process(proc.pid)
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the drill process ended early"
        if split and _loader_backends(server):
            time.sleep(1.0)  # well into the slow table
            return _Loading(server, None)
        for child in [] if split else parent.children(recursive=True):
            try:
                if (
                    child.name() == "pg_restore"
                    and "--section=data" in child.cmdline()
                    and _scratch_left(server)
                ):
                    time.sleep(1.0)  # well into the slow table
                    return _Loading(server, child)
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.05)
    raise AssertionError("the drill never started loading data")


SPLIT = pytest.mark.parametrize("split", [False, True], ids=["pg_restore-loads", "split-tables"])


@SPLIT
def test_sigkill_during_restore_leaves_no_scratch_database_after_restart(
    pg18: PgServer, workdir: Path, split: bool
) -> None:
    make_sample_db(pg18, "killed", rows=200)
    pg18.execute(SLOW_TABLE, "killed")
    config = _config(workdir, pg18, "killed", split_tables=split)
    env = open_env(config_mod.load(config))
    backup = env.backup()
    target = env.config.targets[0]
    proc = _drill_process(config, workdir / "drill.log")
    restore = None
    try:
        restore = _wait_for_restore(proc, pg18, split)
        [scratch] = _scratch_left(pg18)
        # a drill that is alive (in another process) is left alone by a start-up clean-up
        assert drop_leftover_scratch_databases(target) == []
        assert _scratch_left(pg18) == [scratch]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        if not split:
            assert restore.is_running()  # an orphan pg_restore still writing into the scratch db
        _wait_released(pg18, scratch)  # the server ends the killed drill's session (at once)
        # "restart": what ServiceState.recover() does
        assert drop_leftover_scratch_databases(target) == [scratch]
        env.storage.cleanup_partials()
        env.catalog.mark_running_interrupted()
        assert _scratch_left(pg18) == []
        assert not list(backup.path.parent.glob("*.partial"))
        restore.wait(30)  # its connections were terminated: it ends
        drills = env.catalog.list_verifications(backup.backup_id)
        assert [d.status for d in drills] == ["interrupted"]
    finally:
        if proc.poll() is None:
            proc.kill()
        if restore is not None and restore.tool is not None and restore.is_running():
            restore.tool.kill()
        for name in _scratch_left(pg18):
            pg18.drop_database(name)


@SPLIT
def test_sigterm_of_pgwarden_verify_drops_the_scratch_database(
    pg18: PgServer, workdir: Path, split: bool
) -> None:
    make_sample_db(pg18, "termed", rows=100, vectors=False)
    pg18.execute(SLOW_TABLE, "termed")
    config = _config(workdir, pg18, "termed", split_tables=split)
    env = open_env(config_mod.load(config))
    backup = env.backup()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgwarden.cli", "verify", "-c", str(config), "termed", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        restore = _wait_for_restore(proc, pg18, split)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert time.monotonic() - started < 15
        assert proc.returncode == 1, err
        report = json.loads(out)
        assert report["status"] == "interrupted"
        assert not _scratch_left(pg18)
        assert not restore.is_running()
        assert not list(backup.path.parent.glob("*.partial"))
        assert [d.status for d in env.catalog.list_verifications(backup.backup_id)] == [
            "interrupted"
        ]
        manifest = json.loads(backup.manifest_path.read_text())
        assert manifest["verifications"][-1]["status"] == "interrupted"
    finally:
        if proc.poll() is None:
            proc.kill()
        for name in _scratch_left(pg18):
            pg18.drop_database(name)


def test_cancel_during_checks_stops_a_long_query(pg18: PgServer, workdir: Path) -> None:
    """A cancel that arrives while an operator's check runs a long query cancels the query."""
    import threading

    make_sample_db(pg18, "cancel_q", rows=50, vectors=False)
    env = open_env(
        config_mod.load(
            _config(
                workdir,
                pg18,
                "cancel_q",
                checks=[{"name": "slow", "sql": "SELECT pg_sleep(60)::text", "equals": ""}],
            )
        )
    )
    env.backup()
    cancel = threading.Event()

    def progress(**fields: Any) -> None:
        if fields.get("phase") == "checking":
            threading.Timer(1.0, cancel.set).start()

    started = time.monotonic()
    outcome = run_verification(
        VerifyRequest(
            env.config.targets[0],
            env.config,
            env.catalog,
            env.storage,
            cancel=cancel,
            progress=progress,
            raise_on_failure=False,
        )
    )
    assert time.monotonic() - started < 30
    assert outcome.status == "interrupted"
    assert not _scratch_left(pg18)
    assert os.getpid()  # the test process itself was not signalled


def test_a_backup_being_deleted_is_not_drilled_and_a_drilled_one_is_not_deleted(
    pg18: PgServer, workdir: Path, monkeypatch: Any
) -> None:
    from pgwarden.restore import drill as verify
    from pgwarden.restore import locate
    from pgwarden.storage.locks import BackupLocks

    make_sample_db(pg18, "locked", rows=50, vectors=False)
    env = open_env(config_mod.load(_config(workdir, pg18, "locked")))
    backup = env.backup()
    locks = BackupLocks(env.config.daemon.state_dir)
    monkeypatch.setattr(verify, "LOCK_TIMEOUT_S", 0.5)
    monkeypatch.setattr(locate, "LOCK_TIMEOUT_S", 0.5)  # the shared lock's wait (60 s)
    request = VerifyRequest(
        env.config.targets[0], env.config, env.catalog, env.storage, raise_on_failure=False
    )
    with locks.try_exclusive(backup.backup_id) as deleting:
        assert deleting.held
        outcome = run_verification(request)
    assert outcome.failed_checks[0].name == "setup"
    assert "being deleted" in outcome.failed_checks[0].detail
    # while a drill reads the backup, retention cannot take it
    seen: list[bool] = []

    def progress(**fields: Any) -> None:
        if fields.get("phase") == "restoring" and not seen:
            with locks.try_exclusive(backup.backup_id) as lock:
                seen.append(lock.held)

    request.progress = progress
    assert run_verification(request).passed
    assert seen == [False]


def test_the_verification_server_stopping_mid_restore_fails_the_drill_cleanly(
    pg18: PgServer, workdir: Path
) -> None:
    """The drill ends as failed (not with an exception), names the restore, and the scratch
    database it could not drop is dropped once the server is back (start-up clean-up)."""
    import threading

    from tests.pgservers import start_pg15, temp_base

    base = temp_base("pgwarden-verify-stop-")
    server = start_pg15(base)
    try:
        make_sample_db(pg18, "stopping", rows=50, vectors=False)
        pg18.execute(SLOW_TABLE, "stopping")
        env = open_env(
            config_mod.load(_config(workdir, pg18, "stopping", dsn=server.uri("postgres")))
        )
        env.backup()

        def stop_while_loading() -> None:
            # once the data is being loaded (not while the schema is: a stop there fails
            # another step), and well into the slow table
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if server.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY %'"
                )[0][0]:
                    time.sleep(1.0)
                    break
                time.sleep(0.05)
            server.stop("immediate")

        stoppers: list[threading.Thread] = []

        def progress(**fields: Any) -> None:
            # "restoring" may be reported more than once: one stopper, or the second one's
            # `pg_ctl stop` finds the server already down and fails the test from its thread
            if fields.get("phase") == "restoring" and not stoppers:
                stoppers.append(threading.Thread(target=stop_while_loading, daemon=True))
                stoppers[0].start()

        outcome = run_verification(
            VerifyRequest(
                env.config.targets[0],
                env.config,
                env.catalog,
                env.storage,
                progress=progress,
                raise_on_failure=False,
            )
        )
        assert outcome.status == "failed"
        assert outcome.failed_checks[0].name == "restore"
        # the drill fails as soon as its connection drops, while `pg_ctl stop -w` may still
        # wait for the postmaster to exit: starting the server before it returns makes that
        # stop see a running server again and fail from its thread
        stoppers[0].join(timeout=60)
        server.start()
        assert drop_leftover_scratch_databases(env.config.targets[0]) == [outcome.scratch_database]
        assert not _scratch_left(server)
    finally:
        if server.is_running():
            server.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)
