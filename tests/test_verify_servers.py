"""Drills across servers and formats: PostgreSQL 15 as a separate verification server, a
missing pgvector reported before restoring, every archive format, both ways a ``.dump.zst``
reaches pg_restore, a random older backup, and connection headroom on the server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgwarden.backup.take import BackupOutcome
from pgwarden.restore.drill import VerifyRequest, run_verification
from pgwarden.restore.outcome import VerifyOutcome
from tests.helpers import Env, target_env
from tests.pgservers import PgServer
from tests.sampledata import make_rich_db, make_sample_db


def _drill(env: Env, **kw: Any) -> VerifyOutcome:
    return run_verification(
        VerifyRequest(
            env.config.targets[0],
            env.config,
            env.catalog,
            env.storage,
            raise_on_failure=False,
            **kw,
        )
    )


def _scratch_left(server: PgServer) -> list[str]:
    return [d for d in server.databases() if d.startswith("pgwarden_verify_")]


def _checks(outcome: VerifyOutcome) -> dict[str, Any]:
    return {c["name"]: c for c in outcome.as_dict()["checks"]}


def test_pg15_as_a_separate_verification_server(
    pg18: PgServer, pg15: PgServer, workdir: Path
) -> None:
    """A PostgreSQL 18 database drilled on PostgreSQL 15.  pg_restore must be at least as new as
    the pg_dump that wrote the archive (18 here); it restores into the older server, whose only
    complaint -- the ``SET transaction_timeout`` every 17+ tool sends -- is noted, not failed."""
    make_sample_db(pg18, "to15", rows=250, vectors=False)
    env = target_env(
        workdir,
        pg18,
        "to15",
        verify={
            "dsn": pg15.uri("postgres"),
            "checks": [{"name": "users", "sql": "SELECT count(*) FROM users", "equals": 250}],
        },
    )
    env.backup()
    outcome = _drill(env)
    checks = _checks(outcome)
    assert outcome.passed, json.dumps(outcome.as_dict(), indent=2)
    assert "PostgreSQL 15" in checks["headroom"]["detail"]
    assert str(pg15.port) in outcome.server
    assert "transaction_timeout" in checks["restore"]["detail"]
    assert checks["row_counts"]["passed"] and checks["sql:users"]["actual"] == 250
    assert not _scratch_left(pg15)
    assert not _scratch_left(pg18)


def test_missing_pgvector_on_the_verification_server_is_reported_before_restoring(
    pg18: PgServer, pg15: PgServer, workdir: Path
) -> None:
    make_sample_db(pg18, "vec_to15", rows=100)
    env = target_env(workdir, pg18, "vec_to15", verify={"dsn": pg15.uri("postgres")})
    env.backup()
    outcome = _drill(env)
    assert not outcome.passed
    failed = outcome.failed_checks
    assert [c.name for c in failed] == ["extensions_available"]
    assert "vector" in failed[0].detail and "pgvector" in failed[0].detail
    assert "PostgreSQL 15" in failed[0].detail
    assert failed[0].actual == ["vector"]
    names = [c.name for c in outcome.checks]
    assert "restore" not in names  # reported before any restore
    assert outcome.scratch_database is None
    assert not _scratch_left(pg15)


@pytest.mark.parametrize(
    ("backup", "mode"),
    [
        ({"format": "plain"}, "gzip stream into psql"),
        ({"format": "plain", "compression": "none"}, "plain stream into psql"),
        ({"format": "directory", "jobs": 2}, "from the artifact"),
        ({"compression": "gzip"}, "from the artifact"),
        ({"compression": "none"}, "from the artifact"),
        ({}, "streamed into pg_restore, post-data --jobs=2"),
    ],
    ids=["sql.gz", "sql", "directory", "dump-gzip", "dump-none", "dump.zst"],
)
def test_every_format_drills(
    pg18: PgServer, workdir: Path, backup: dict[str, Any], mode: str
) -> None:
    make_rich_db(pg18, "formats_src", large_objects=2)
    env = target_env(workdir, pg18, "formats_src", backup=backup)
    made = env.backup()
    outcome = _drill(env)
    assert outcome.passed, json.dumps(outcome.as_dict(), indent=2)
    assert mode in outcome.restore_mode
    assert _checks(outcome)["vector_probes"]["passed"]
    assert not _scratch_left(pg18)
    assert not list(made.path.parent.glob("*.partial"))


@pytest.mark.parametrize(
    ("split", "how"),
    [
        (False, "streamed into a serial pg_restore"),
        (True, "streamed into pg_restore, post-data --jobs=2; data over 2 connections"),
    ],
    ids=["pg_restore-loads", "split-tables"],
)
def test_a_dump_zst_streamed_into_pg_restore(
    pg18: PgServer, workdir: Path, split: bool, how: str
) -> None:
    make_sample_db(pg18, "streamed", rows=300)
    env = target_env(workdir, pg18, "streamed", verify={"split_tables": split})
    env.backup()
    outcome = _drill(env, restore_mode="stream")
    assert outcome.passed, json.dumps(outcome.as_dict(), indent=2)
    assert outcome.restore_mode == how
    assert outcome.jobs == (2 if split else 1)
    assert _checks(outcome)["archive"]["passed"]
    assert ("rows of" in _checks(outcome)["restore"]["detail"]) is split
    assert not list((workdir / "backups").rglob("*.partial"))  # the table of contents too


def _forge(made: BackupOutcome, data: bytes) -> None:
    """Rewrite the artifact and the manifest's checksum (as someone with write access could)."""
    import hashlib

    made.path.write_bytes(data)
    manifest = json.loads(made.manifest_path.read_text())
    manifest["sha256"] = hashlib.sha256(data).hexdigest()
    made.manifest_path.write_text(json.dumps(manifest))


def test_a_truncated_stream_fails_a_streamed_restore(pg18: PgServer, workdir: Path) -> None:
    make_sample_db(pg18, "streamed_short", rows=300)
    env = target_env(workdir, pg18, "streamed_short")
    made = env.backup()
    _forge(made, made.path.read_bytes()[: made.size_bytes * 3 // 4])
    outcome = _drill(env, restore_mode="stream")
    assert not outcome.passed
    assert outcome.failed_checks[0].name == "archive"
    assert "truncated" in outcome.failed_checks[0].detail
    assert not _scratch_left(pg18)


def test_garbage_inside_the_stream_fails_the_drill(pg18: PgServer, workdir: Path) -> None:
    make_sample_db(pg18, "streamed_bad", rows=300)
    env = target_env(workdir, pg18, "streamed_bad")
    made = env.backup()
    data = bytearray(made.path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    _forge(made, bytes(data))
    for mode in ("stream", "spool"):
        outcome = _drill(env, restore_mode=mode)
        assert not outcome.passed
        assert outcome.failed_checks[0].name in ("archive", "restore"), outcome.as_dict()
    assert not _scratch_left(pg18)
    assert not list(made.path.parent.glob("*.partial"))


def test_random_older_also_drills_one_older_backup(pg18: PgServer, workdir: Path) -> None:
    make_sample_db(pg18, "history", rows=80, vectors=False)
    env = target_env(workdir, pg18, "history", verify={"random_older": True})
    first = env.backup()
    second = env.backup()
    outcome = _drill(env)
    assert outcome.backup_id == second.backup_id
    assert [o.backup_id for o in outcome.older] == [first.backup_id]
    assert outcome.passed and outcome.as_dict()["older"][0]["passed"]
    assert env.catalog.get_backup(first.backup_id).verify_status == "passed"
    # a named backup is drilled alone
    named = _drill(env, backup_ref=first.backup_id[:8])
    assert named.backup_id == first.backup_id and not named.older


@contextmanager
def _held_connections(server: PgServer, count: int) -> Iterator[None]:
    conns = [psycopg.connect(server.dsn("postgres")) for _ in range(count)]
    try:
        yield
    finally:
        for conn in conns:
            conn.close()


def test_jobs_are_reduced_to_the_free_connections(pg18: PgServer, workdir: Path) -> None:
    make_sample_db(pg18, "crowded", rows=100, vectors=False)
    env = target_env(workdir, pg18, "crowded", verify={"jobs": 4})
    env.backup()
    # the other client backends, not counting the one asking
    in_use = int(
        pg18.execute(
            "SELECT count(*) - 1 FROM pg_stat_activity WHERE backend_type = 'client backend'"
        )[0][0]
    )  # type: ignore[call-overload]
    # max_connections 100, 10 kept for applications, 1 for the drill's own connection: leave
    # room for exactly 2 more (pg_restore --jobs=1 needs 1, --jobs=2 needs 3)
    with _held_connections(pg18, 100 - 10 - 1 - 2 - in_use):
        outcome = _drill(env)
    assert outcome.passed, json.dumps(outcome.as_dict(), indent=2)
    assert outcome.jobs == 1
    assert "jobs reduced from 4 to 1" in _checks(outcome)["headroom"]["detail"]


def test_a_role_that_cannot_create_databases_fails_the_scratch_step(
    pg18: PgServer, workdir: Path
) -> None:
    """The scratch database is created while the checksum runs: its failure is reported after
    the checksum passed, naming the database, and leaves nothing behind."""
    make_sample_db(pg18, "no_createdb", rows=100, vectors=False)
    pg18.execute("DROP ROLE IF EXISTS drill_without_createdb")
    pg18.execute("CREATE ROLE drill_without_createdb LOGIN NOCREATEDB")
    verifier = pg18.uri("postgres", user="drill_without_createdb")
    env = target_env(workdir, pg18, "no_createdb", verify={"dsn": verifier})
    backup = env.backup()
    outcome = _drill(env)
    checks = _checks(outcome)
    assert checks["checksum"]["passed"]
    assert [c.name for c in outcome.failed_checks] == ["scratch"]
    assert "cannot create the scratch database pgwarden_verify_no_createdb_" in (
        outcome.failed_checks[0].detail
    )
    assert "permission denied to create database" in outcome.failed_checks[0].detail
    assert outcome.scratch_database is None
    assert not _scratch_left(pg18)
    assert not list(backup.path.parent.glob("*.partial"))
