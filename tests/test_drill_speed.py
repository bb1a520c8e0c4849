"""The faster drill keeps its verdict: a drill whose restore reads the artifact itself hashes it
beside the restore (:mod:`pgwarden.restore.overlap`), and a checksum that differs from the
manifest's still fails it, even though the restore and every check passed; ``pgwarden
restore`` still checks before it restores anything; a database that is one big table
streams its ``.dump.zst`` instead of spooling it."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pgwarden.archive.manifest import Manifest, TableCount
from pgwarden.backup.take import BackupOutcome
from pgwarden.restore.drill import VerifyRequest, run_verification
from pgwarden.restore.outcome import VerifyOutcome
from pgwarden.restore.overlap import STREAM_MIN_BYTES, drill_jobs
from pgwarden.restore.real import RestoreRequest, restore_backup
from tests.helpers import Env, target_env
from tests.pgservers import PgServer
from tests.sampledata import make_sample_db

FORGED = "0" * 64


def _drill(env: Env, **kw: Any) -> VerifyOutcome:
    request = VerifyRequest(
        env.config.targets[0], env.config, env.catalog, env.storage, raise_on_failure=False, **kw
    )
    return run_verification(request)


def _forge_manifest_checksum(backup: BackupOutcome) -> None:
    """The manifest claims another SHA-256; the artifact itself is intact (it restores)."""
    data = json.loads(backup.manifest_path.read_text())
    data["sha256"] = FORGED
    backup.manifest_path.write_text(json.dumps(data, indent=2))


def _checks(outcome: VerifyOutcome) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in outcome.as_dict()["checks"]}


@pytest.mark.parametrize(
    ("backup", "mode", "how"),
    [
        ({}, "stream", "streamed into pg_restore, post-data --jobs=2; data over 2 connections"),
        (
            {"compression": "none"},
            "auto",
            "pg_restore --jobs=2 from the artifact; data over 2 connections",
        ),
    ],
    ids=["dump.zst-streamed", "dump-in-place"],
)
def test_a_checksum_mismatch_fails_the_drill_though_the_overlapped_restore_passed(
    pg18: PgServer, workdir: Path, backup: dict[str, str], mode: str, how: str
) -> None:
    db = "ovl_" + mode
    make_sample_db(pg18, db, rows=200, vectors=False)
    env = target_env(workdir, pg18, db, backup=backup)
    taken = env.backup()
    good = _drill(env, restore_mode=mode)
    assert good.passed, json.dumps(good.as_dict(), indent=2)
    assert good.restore_mode == how
    names = [c.name for c in good.checks]
    assert names[:5] == ["headroom", "checksum", "archive", "extensions_available", "restore"]
    assert "computed beside the restore" in _checks(good)["checksum"]["detail"]
    assert "phases: pre-data" in _checks(good)["restore"]["detail"]

    _forge_manifest_checksum(taken)
    bad = _drill(env, restore_mode=mode)
    assert not bad.passed
    checks = _checks(bad)
    assert [c.name for c in bad.failed_checks] == ["checksum"]
    assert checks["checksum"]["expected"] == FORGED
    assert checks["checksum"]["actual"] == taken.sha256
    # the restore ran beside the checksum, and passed; the verdict needed both
    assert checks["restore"]["passed"] and checks["row_counts"]["passed"]
    assert bad.error is not None and bad.error.startswith("checksum")
    assert env.catalog.get_backup(taken.backup_id).verify_status == "failed"
    assert not [d for d in pg18.databases() if d.startswith("pgwarden_verify_")]


def test_pgwarden_restore_checks_the_checksum_before_restoring(
    pg18: PgServer, workdir: Path
) -> None:
    make_sample_db(pg18, "ovl_real", rows=100, vectors=False)
    env = target_env(workdir, pg18, "ovl_real", backup={"compression": "none"})
    _forge_manifest_checksum(env.backup())
    pg18.drop_database("ovl_real_into")
    outcome = restore_backup(
        RestoreRequest(env.config.targets[0], env.config, env.catalog, env.storage, "ovl_real_into")
    )
    assert not outcome.passed
    assert [c.name for c in outcome.checks] == ["checksum"]
    assert "ovl_real_into" not in pg18.databases()  # nothing was created, nothing restored


def test_one_dominant_table_streams_and_any_other_database_spools() -> None:
    def manifest(*sizes: int, compression: str = "zstd:1", fmt: str = "custom") -> Manifest:
        tables = tuple(TableCount("public", f"t{i}", 1, True, s) for i, s in enumerate(sizes))
        base = Manifest("id", "t", "db", None, fmt, compression, "stream", "p")  # type: ignore[arg-type]
        return replace(base, tables=tables)

    big = STREAM_MIN_BYTES
    assert drill_jobs("auto", manifest(4 * big, big // 10), 2) == 1  # pgbench alone
    assert drill_jobs("auto", manifest(4 * big, 3 * big, big // 2), 2) == 2  # the app shape
    assert drill_jobs("auto", manifest(big // 100, 1), 2) == 2  # too small to matter
    assert drill_jobs("auto", manifest(4 * big, compression="gzip:6"), 2) == 2  # in place
    assert drill_jobs("spool", manifest(4 * big), 2) == 2
    assert drill_jobs("stream", manifest(1, 1), 2) == 1


def test_a_damaged_stream_is_reported_as_the_checksum_failure(
    pg18: PgServer, workdir: Path
) -> None:
    """The streamed restore breaks on the flipped byte before the hash is done: the drill
    waits for the hash and reports the checksum, the cause, not the restore's symptom."""
    make_sample_db(pg18, "ovl_flip", rows=200, vectors=False)
    env = target_env(workdir, pg18, "ovl_flip")
    taken = env.backup()
    with taken.path.open("r+b") as fh:
        fh.seek(taken.size_bytes // 2)
        byte = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([byte[0] ^ 0x01]))
    outcome = _drill(env, restore_mode="stream")
    assert not outcome.passed
    assert outcome.error is not None and outcome.error.startswith("checksum"), outcome.error
    assert outcome.failed_checks[0].expected == taken.sha256
    assert not [d for d in pg18.databases() if d.startswith("pgwarden_verify_")]
