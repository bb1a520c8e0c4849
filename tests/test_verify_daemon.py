"""Drills as the daemon runs them: the ``verify`` job function (a failed drill fails the job,
and the metrics count it), and the start-up recovery that drops leftover scratch databases."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from psycopg import sql

from pgwarden.backup.take import BackupRequest, take_backup
from pgwarden.metrics import Metrics
from pgwarden.restore.outcome import DrillFailed
from pgwarden.service import jobkinds as jobs
from pgwarden.service import recovery
from pgwarden.service.jobs import Job
from pgwarden.service.state import ServiceState
from tests.helpers import make_config, open_env, target_doc
from tests.pgservers import PgServer
from tests.sampledata import make_sample_db


def test_the_verify_job_passes_and_fails_like_the_drill(pg18: PgServer, workdir: Path) -> None:
    make_sample_db(pg18, "job_db", rows=150, vectors=False)
    config = make_config(workdir, [target_doc(pg18, "job_db", backup={"retries": 0})])
    env = open_env(config)
    backup = take_backup(BackupRequest(config.targets[0], config, env.catalog, env.storage))
    state = ServiceState.open(config, Metrics())
    try:
        progress: list[str] = []
        job = Job("verify", "job_db", config)
        job.report = lambda **fields: progress.append(str(fields.get("phase")))  # type: ignore[method-assign]
        result = jobs.verify_job(job, state)
        assert result.passed is True
        assert result.backup_id == backup.backup_id
        assert {"checksum", "restoring", "checking"} <= set(progress)
        # a damaged backup: the job raises, so the daemon records it as failed
        with backup.path.open("r+b") as fh:
            fh.seek(40)
            fh.write(b"\xff\xff")
        with pytest.raises(DrillFailed) as info:
            jobs.verify_job(
                Job("verify", "job_db", config, args={"backup": backup.backup_id}), state
            )
        assert info.value.check == "checksum"
        assert info.value.outcome.passed is False
    finally:
        state.close()


def test_start_up_recovery_drops_leftover_scratch_databases(pg18: PgServer, workdir: Path) -> None:
    make_sample_db(pg18, "recover_db", rows=10, vectors=False)
    config = make_config(workdir, [target_doc(pg18, "recover_db")])
    # a crash right after CREATE DATABASE (no owner comment yet), and a drill of a dead process
    pg18.execute("CREATE DATABASE pgwarden_verify_recover_db_20260101000000_dead")
    pg18.execute("CREATE DATABASE pgwarden_verify_recover_db_20260101000001_gone")
    marker = "pgwarden-drill " + json.dumps(
        {"host": os.uname().nodename, "pid": 999999999, "started": "x", "target": "recover_db"}
    )
    with pg18.connect() as conn:
        conn.execute(
            sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                sql.Identifier("pgwarden_verify_recover_db_20260101000001_gone"),
                sql.Literal(marker),
            )
        )
    state = ServiceState.open(config, Metrics())
    try:
        recovery.check_servers(state)  # what recover() starts in the background at start-up
    finally:
        state.close()
    assert not [d for d in pg18.databases() if d.startswith("pgwarden_verify_recover_db")]
