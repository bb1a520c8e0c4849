"""Restore drills end to end on real servers: every check passes on a good backup, and each
kind of damage fails the step that should catch it, naming what is wrong."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from pgwarden.archive.manifest import Manifest
from pgwarden.backup.take import BackupOutcome
from pgwarden.config import SqlCheck
from pgwarden.pg.conninfo import ConnSpec
from pgwarden.restore.checks import QueryCanceller, check_sql
from pgwarden.restore.drill import VerifyRequest, run_verification
from pgwarden.restore.outcome import DrillFailed, VerifyOutcome
from tests.helpers import Env, target_env
from tests.pgservers import PgServer
from tests.sampledata import make_rich_db, make_sample_db


def _drill(env: Env, **kw: Any) -> VerifyOutcome:
    request = VerifyRequest(
        env.config.targets[0], env.config, env.catalog, env.storage, raise_on_failure=False, **kw
    )
    return run_verification(request)


def _check(outcome: VerifyOutcome, name: str) -> dict[str, Any]:
    found = [c for c in outcome.as_dict()["checks"] if c["name"] == name]
    assert found, [c["name"] for c in outcome.as_dict()["checks"]]
    return found[0]


def _scratch_left(server: PgServer) -> list[str]:
    return [d for d in server.databases() if d.startswith("pgwarden_verify_")]


def test_a_good_backup_passes_every_check(pg18: PgServer, workdir: Path) -> None:
    make_rich_db(pg18, "drill_ok")
    env = target_env(
        workdir,
        pg18,
        "drill_ok",
        verify={
            "checks": [
                {"name": "users exist", "sql": "SELECT count(*) FROM users", "min": 1},
                {
                    "name": "one invoice sequence",
                    "sql": "SELECT last_value FROM invoice_no",
                    "equals": 123457,
                },
            ]
        },
    )
    backup = env.backup()
    outcome = _drill(env)
    report = outcome.as_dict()
    assert report["passed"], json.dumps(report, indent=2)
    names = [c["name"] for c in report["checks"]]
    assert names[:5] == ["headroom", "checksum", "archive", "extensions_available", "restore"]
    assert {
        "row_counts",
        "extensions",
        "sql:users exist",
        "sql:one invoice sequence",
        "vector_probes",
    } <= set(names)
    assert report["backup_id"] == backup.backup_id
    assert report["duration_s"] > 0
    assert "probes" in _check(outcome, "vector_probes")["detail"]
    assert _check(outcome, "sql:one invoice sequence")["actual"] == 123457
    assert outcome.jobs == 2
    # the rich database has a partitioned table: its drill keeps every table logged
    assert "kept logged (partitioned tables)" in _check(outcome, "restore")["detail"]
    assert "rows of" in _check(outcome, "restore")["detail"]  # split over the connections
    assert not _scratch_left(pg18)
    # no spool file left beside the storage
    assert not list(backup.path.parent.glob("*.partial"))
    # the result is in the manifest and in the catalog
    manifest = json.loads(backup.manifest_path.read_text())
    assert manifest["verifications"][-1]["status"] == "passed"
    assert Manifest.load(backup.manifest_path).sha256 == backup.sha256
    record = env.catalog.get_backup(backup.backup_id)
    assert record.verify_status == "passed"
    drills = env.catalog.list_verifications(backup.backup_id)
    assert drills[0].status == "passed"
    assert drills[0].details["checks"]


def test_a_flipped_byte_fails_the_checksum_step(pg18: PgServer, workdir: Path) -> None:
    make_sample_db(pg18, "drill_flip", rows=300)
    env = target_env(workdir, pg18, "drill_flip")
    backup = env.backup()
    with backup.path.open("r+b") as fh:
        fh.seek(backup.size_bytes // 2)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0x01]))
    outcome = _drill(env)
    assert not outcome.passed
    failed = outcome.failed_checks
    assert [c.name for c in failed] == ["checksum"]
    assert failed[0].expected == backup.sha256
    assert failed[0].actual != backup.sha256
    assert outcome.scratch_database is None  # nothing was restored
    assert not _scratch_left(pg18)
    assert env.catalog.get_backup(backup.backup_id).verify_status == "failed"
    with pytest.raises(DrillFailed, match="checksum"):
        run_verification(VerifyRequest(env.config.targets[0], env.config, env.catalog, env.storage))


def test_a_truncated_archive_fails(pg18: PgServer, workdir: Path) -> None:
    make_sample_db(pg18, "drill_trunc", rows=300)
    env = target_env(workdir, pg18, "drill_trunc")
    backup = env.backup()
    os.truncate(backup.path, backup.size_bytes * 2 // 3)
    outcome = _drill(env)
    assert [c.name for c in outcome.failed_checks] == ["checksum"]
    assert f"manifest says {backup.size_bytes}" in outcome.failed_checks[0].detail
    assert not _scratch_left(pg18)


def test_a_truncated_archive_with_a_matching_checksum_fails_the_archive_step(
    pg18: PgServer, workdir: Path
) -> None:
    """A backup damaged before it was hashed (a bug, a rewrite by hand): the checksum holds,
    reading the compressed stream does not."""
    make_sample_db(pg18, "drill_trunc2", rows=300)
    env = target_env(workdir, pg18, "drill_trunc2")
    backup = env.backup()
    os.truncate(backup.path, backup.size_bytes * 2 // 3)
    _rewrite_checksum(backup)
    outcome = _drill(env)
    assert [c.name for c in outcome.failed_checks] == ["archive"]
    assert "truncated" in outcome.failed_checks[0].detail
    assert not _scratch_left(pg18)
    assert not list(backup.path.parent.glob("*.partial"))


@pytest.mark.parametrize(
    ("backup", "complaint"),
    [
        ({"format": "plain"}, "the gzip stream ends early"),
        ({"format": "plain", "compression": "none"}, "end-of-dump line is missing"),
    ],
)
def test_a_truncated_plain_dump_with_a_matching_checksum_fails_the_archive_step(
    pg18: PgServer, workdir: Path, backup: dict[str, str], complaint: str
) -> None:
    make_sample_db(pg18, "drill_trunc_plain", rows=300)
    env = target_env(workdir, pg18, "drill_trunc_plain", backup=backup)
    taken = env.backup()
    os.truncate(taken.path, taken.size_bytes * 2 // 3)
    _rewrite_checksum(taken)
    outcome = _drill(env)
    assert [c.name for c in outcome.failed_checks] == ["archive"]
    assert complaint in outcome.failed_checks[0].detail
    assert not _scratch_left(pg18)


def _rewrite_checksum(backup: BackupOutcome) -> None:
    import hashlib

    data = json.loads(backup.manifest_path.read_text())
    content = backup.path.read_bytes()
    data["sha256"] = hashlib.sha256(content).hexdigest()
    data["size_bytes"] = len(content)
    backup.manifest_path.write_text(json.dumps(data, indent=2))


def test_a_backup_without_one_tables_data_fails_the_count_naming_it(
    pg18: PgServer, workdir: Path
) -> None:
    make_sample_db(pg18, "drill_excl", rows=400)
    env = target_env(
        workdir, pg18, "drill_excl", backup={"extra_args": ["--exclude-table-data=public.users"]}
    )
    env.backup()
    outcome = _drill(env)
    assert not outcome.passed
    counts = _check(outcome, "row_counts")
    assert counts["passed"] is False
    assert counts["failures"] == [{"item": "public.users", "expected": 400, "actual": 0}]
    # documents reference users: the foreign key cannot be restored either, and says so
    restore = _check(outcome, "restore")
    assert restore["passed"] is False
    assert "documents_user_id_fkey" in restore["detail"]
    assert not _scratch_left(pg18)


def test_a_failing_sql_check_is_reported_with_its_name_and_values(
    pg18: PgServer, workdir: Path
) -> None:
    make_sample_db(pg18, "drill_sql", rows=120, vectors=False)
    env = target_env(
        workdir,
        pg18,
        "drill_sql",
        verify={
            "checks": [
                {"name": "enough users", "sql": "SELECT COUNT(*) FROM users", "min": 1000},
                {
                    "name": "users present",
                    "sql": "SELECT COUNT(*) FROM users",
                    "min": 1,
                    "max": 500,
                },
                {"name": "broken", "sql": "SELECT nonsense FROM nowhere", "equals": 1},
            ]
        },
    )
    env.backup()
    outcome = _drill(env)
    assert not outcome.passed
    enough = _check(outcome, "sql:enough users")
    assert enough["passed"] is False
    assert enough["expected"] == {"min": 1000}
    assert enough["actual"] == 120
    assert "below the minimum" in enough["detail"]
    assert _check(outcome, "sql:users present")["passed"] is True
    broken = _check(outcome, "sql:broken")
    assert broken["passed"] is False
    assert "nowhere" in broken["actual"]
    assert outcome.error is not None
    assert outcome.error.startswith("sql:enough users")
    assert _check(outcome, "row_counts")["passed"] is True
    assert "tables restored unlogged" in _check(outcome, "restore")["detail"]


def test_a_sql_check_runs_one_statement_and_stays_read_only(pg18: PgServer) -> None:
    """``SELECT 1; COMMIT; <DDL>`` would end READ ONLY under the simple query protocol."""
    pg18.create_database("drill_one_statement")
    try:
        spec = ConnSpec(pg18.dsn("drill_one_statement"))
        canceller = QueryCanceller(None)
        sneaky = SqlCheck("sneaky", "SELECT 1; COMMIT; CREATE TABLE escaped ()", equals=1)
        result = check_sql(spec, sneaky, canceller)
        assert not result.passed
        assert "multiple commands" in str(result.actual), result.actual
        rows = pg18.execute("SELECT to_regclass('public.escaped')::text", "drill_one_statement")
        assert rows == [(None,)]
        plain = check_sql(spec, SqlCheck("plain", "SELECT 41 + 1;", equals=42), canceller)
        assert plain.passed, plain.detail
    finally:
        pg18.drop_database("drill_one_statement")
