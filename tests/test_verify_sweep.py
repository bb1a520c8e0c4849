"""The start-up sweep of leftover scratch databases against drills that are still alive: in
another process (caught between ``CREATE DATABASE`` and its comment), on another "host" (a
session in another database of the shared server), and in this very process while the
daemon's start-up checks run (issue 16, item 4).  Only a drill whose session is gone loses
its database."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import tomli_w
from psycopg import sql

from pgwarden import config as config_mod
from pgwarden.metrics import Metrics
from pgwarden.restore import scratch, scratchlock
from pgwarden.restore.drill import (
    VerifyRequest,
    drop_leftover_scratch_databases,
    run_verification,
)
from pgwarden.service import recovery
from pgwarden.service.state import ServiceState
from tests.helpers import make_config, open_env, target_doc, write_config
from tests.pgservers import PgServer
from tests.sampledata import make_sample_db

#: a drill in another process, stopped right after CREATE DATABASE (before its comment)
STUCK_DRILL = """
import sys, time
from pgwarden import config as c
from pgwarden.restore import scratch
target = c.load(sys.argv[1]).targets[0]
spec = scratch.verification_spec(target)
def stuck(*args):
    print("created", flush=True)
    time.sleep(3600)
scratch._marker = stuck
conn = scratch.connect(spec, "the verification server")
scratch.ScratchDatabase(spec, conn, scratch.scratch_name(target.name), target.name)._create()
"""


def _scratch(server: PgServer, target: str) -> list[str]:
    return [d for d in server.databases() if d.startswith(f"pgwarden_verify_{target}_")]


def _config_file(workdir: Path, server: PgServer, db: str) -> Path:
    doc = {
        "daemon": {"state_dir": str(workdir / "state"), "socket": str(workdir / "ctl.sock")},
        "storage": {"path": str(workdir / "backups")},
        "targets": [target_doc(server, db)],
    }
    workdir.mkdir(parents=True, exist_ok=True)
    return write_config(workdir, tomli_w.dumps(doc))


def _wait_released(server: PgServer, name: str) -> None:
    """Until the server has ended the killed holder's session (it notices at once, but
    asynchronously)."""
    deadline = time.monotonic() + 10
    with server.connect() as conn:
        while scratchlock.held_elsewhere(conn, name):
            assert time.monotonic() < deadline, "the killed holder's session never ended"
            time.sleep(0.05)


def test_a_live_drill_in_another_process_keeps_its_database_a_killed_one_loses_it(
    pg18: PgServer, workdir: Path
) -> None:
    pg18.create_database("sweep_proc")
    config = _config_file(workdir, pg18, "sweep_proc")
    target = config_mod.load(config).targets[0]
    proc = subprocess.Popen(
        [sys.executable, "-c", STUCK_DRILL, str(config)], stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"created\n"
        [name] = _scratch(pg18, "sweep_proc")  # no comment yet: only its lock says it is alive
        assert drop_leftover_scratch_databases(target) == []
        assert _scratch(pg18, "sweep_proc") == [name]
    finally:
        proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    _wait_released(pg18, name)
    assert drop_leftover_scratch_databases(target) == [name]
    assert _scratch(pg18, "sweep_proc") == []


def test_a_drill_of_another_host_survives_the_sweep(pg18: PgServer, workdir: Path) -> None:
    pg18.create_database("sweep_host")
    config = _config_file(workdir, pg18, "sweep_host")
    target = config_mod.load(config).targets[0]
    name = scratch.scratch_name("sweep_host")
    marker = scratch.MARKER + '{"host": "elsewhere", "pid": 4242, "target": "sweep_host"}'
    # the other host's drill: its session (in another database of the shared server) holds
    # the lock, then creates the database and comments it
    with pg18.connect("postgres") as other:
        assert scratchlock.try_lock(other, name)
        other.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        other.execute(
            sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                sql.Identifier(name), sql.Literal(marker)
            )
        )
        assert drop_leftover_scratch_databases(target) == []
        assert _scratch(pg18, "sweep_host") == [name]
    # that host lost its session (power loss): its database is a leftover now
    _wait_released(pg18, name)
    assert drop_leftover_scratch_databases(target) == [name]


def test_a_drill_running_during_the_start_up_sweep_completes(pg18: PgServer, workdir: Path) -> None:
    make_sample_db(pg18, "sweep_self", rows=200, vectors=False)
    config = make_config(workdir, [target_doc(pg18, "sweep_self", backup={"retries": 0})])
    env = open_env(config)
    env.backup()
    state = ServiceState.open(config, Metrics())
    seen: list[list[str]] = []
    racing: list[threading.Thread] = []

    def startup_checks() -> None:  # what recover() starts in the background at start-up
        recovery.check_servers(state)
        seen.append(_scratch(pg18, "sweep_self"))

    def progress(**fields: Any) -> None:
        if fields.get("phase") == "checksum":  # the database is being created right now
            racing.append(threading.Thread(target=startup_checks))
            racing[-1].start()
        if fields.get("phase") == "restoring":
            startup_checks()

    try:
        outcome = run_verification(
            VerifyRequest(
                config.targets[0],
                config,
                env.catalog,
                env.storage,
                progress=progress,
                raise_on_failure=False,
            )
        )
        for thread in racing:
            thread.join(30)
    finally:
        state.close()
    assert outcome.passed, outcome.failed_checks
    assert seen[-1] == [outcome.scratch_database]
    assert _scratch(pg18, "sweep_self") == []
