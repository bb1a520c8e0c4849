"""``pgwarden restore`` and ``pgwarden verify`` from the command line, on a real server: a
restore gives back the same data, refuses a database that holds something, and ``--dry-run``
prints commands that a shell runs to the same result."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from pgwarden import cli
from pgwarden import config as config_mod
from pgwarden.backup.take import BackupOutcome, BackupRequest, take_backup
from tests.helpers import open_env, target_doc, write_config
from tests.pgservers import PgServer
from tests.sampledata import (
    large_object_digest,
    make_rich_db,
    make_sample_db,
    sequence_values,
    table_fingerprints,
)


def _setup(workdir: Path, server: PgServer, db: str, **backup: Any) -> tuple[Path, BackupOutcome]:
    doc = {
        "daemon": {
            "state_dir": str(workdir / "state"),
            "socket": str(workdir / "ctl.sock"),
            "log_level": "warning",
        },
        "storage": {"path": str(workdir / "backups")},
        "metrics": {"listen": "127.0.0.1:0"},
        "targets": [
            target_doc(
                server,
                db,
                backup={"retries": 0, **backup},
                verify={
                    "checks": [{"name": "users", "sql": "SELECT COUNT(*) FROM users", "min": 1}]
                },
            )
        ],
    }
    path = write_config(workdir, tomli_w.dumps(doc))
    env = open_env(config_mod.load(path))
    try:
        outcome = take_backup(
            BackupRequest(env.config.targets[0], env.config, env.catalog, env.storage)
        )
    finally:
        env.catalog.close()
    return path, outcome


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()  # what the set-up printed (an in-process backup logs) is not the command's
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _same(server: PgServer, a: str, b: str) -> None:
    assert table_fingerprints(server, b) == table_fingerprints(server, a)
    assert sequence_values(server, b) == sequence_values(server, a)
    assert large_object_digest(server, b) == large_object_digest(server, a)


def test_restore_into_a_new_database_then_verify(
    pg18: PgServer, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_rich_db(pg18, "rst_src")
    pg18.drop_database("rst_new")
    config, backup = _setup(workdir, pg18, "rst_src")
    code, out, err = _run(
        capsys, "restore", "-c", str(config), "rst_src", "--into", "rst_new", "--verify", "--json"
    )
    report = json.loads(out)
    assert code == 0, (out, err)
    assert report["passed"] and report["backup_id"] == backup.backup_id
    names = [c["name"] for c in report["checks"]]
    assert {"checksum", "archive", "restore", "row_counts", "vector_probes", "sql:users"} <= set(
        names
    )
    _same(pg18, "rst_src", "rst_new")
    # owners are kept in a real restore (unlike a drill)
    assert pg18.execute(
        "SELECT tableowner FROM pg_tables WHERE tablename = 'users' AND schemaname = 'public'",
        "rst_new",
    ) == [("postgres",)]


def test_restore_refuses_a_database_with_data_unless_forced(
    pg18: PgServer, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_sample_db(pg18, "rst_busy_src", rows=200)
    config, _ = _setup(workdir, pg18, "rst_busy_src")
    make_sample_db(pg18, "rst_busy", rows=50, seed=7)  # someone's data
    before = table_fingerprints(pg18, "rst_busy")
    code, out, err = _run(
        capsys, "restore", "-c", str(config), "rst_busy_src", "--into", "rst_busy"
    )
    assert code == 2
    assert "rst_busy exists and is not empty" in err
    assert "--force" in err
    assert table_fingerprints(pg18, "rst_busy") == before  # untouched
    # the dry run is refused the same way: it shows what would happen
    code, _, err = _run(
        capsys, "restore", "-c", str(config), "rst_busy_src", "--into", "rst_busy", "--dry-run"
    )
    assert code == 2
    # with --force the dry run describes replacing what is there, never "empty"
    code, out, err = _run(
        capsys,
        "restore",
        "-c",
        str(config),
        "rst_busy_src",
        "--into",
        "rst_busy",
        "--dry-run",
        "--force",
    )
    assert code == 0, (out, err)
    header = out.splitlines()[0]
    assert "empty" not in header
    assert "exists, holds" in header and "relations" in header
    assert "replaced" in header
    assert any("--clean" in line and "--if-exists" in line for line in out.splitlines())
    code, out, err = _run(
        capsys,
        "restore",
        "-c",
        str(config),
        "rst_busy_src",
        "--into",
        "rst_busy",
        "--dry-run",
        "--force",
        "--json",
    )
    assert code == 0, (out, err)
    assert json.loads(out)["contents"]
    assert table_fingerprints(pg18, "rst_busy") == before  # the dry runs touched nothing
    code, out, err = _run(
        capsys,
        "restore",
        "-c",
        str(config),
        "rst_busy_src",
        "--into",
        "rst_busy",
        "--force",
        "--verify",
    )
    assert code == 0, (out, err)
    _same(pg18, "rst_busy_src", "rst_busy")


def test_an_empty_existing_database_is_restored_into(
    pg18: PgServer, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_sample_db(pg18, "rst_empty_src", rows=100, vectors=False)
    config, _ = _setup(workdir, pg18, "rst_empty_src")
    pg18.create_database("rst_empty")
    code, out, err = _run(
        capsys, "restore", "-c", str(config), "rst_empty_src", "--into", "rst_empty"
    )
    assert code == 0, (out, err)
    assert "done" in out
    _same(pg18, "rst_empty_src", "rst_empty")


def test_dry_run_prints_commands_that_a_shell_runs(
    pg18: PgServer, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_sample_db(pg18, "rst_dry_src", rows=150)
    pg18.drop_database("rst_dry")
    config, backup = _setup(workdir, pg18, "rst_dry_src")
    code, out, err = _run(
        capsys, "restore", "-c", str(config), "rst_dry_src", "--into", "rst_dry", "--dry-run"
    )
    assert code == 0, err
    assert "rst_dry" not in pg18.databases()  # nothing was run
    lines = [line for line in out.splitlines() if line and not line.startswith("#")]
    assert lines[0].startswith("sha256sum ") and backup.sha256 in lines[0]
    assert any('CREATE DATABASE "rst_dry" TEMPLATE template0' in line for line in lines)
    assert any("pg_restore" in line and "--jobs=2" in line for line in lines)
    assert "password=" not in out
    # the listing is a manual path: a shell runs it (sha256sum prints, the rest restores)
    script = "set -e\n" + "\n".join(lines[1:]) + "\n"
    subprocess.run(
        ["sh", "-c", script],
        check=True,
        capture_output=True,
        env={"PATH": f"{pg18.bin_dir}:/usr/bin:/bin"},
    )
    _same(pg18, "rst_dry_src", "rst_dry")
    assert not list(backup.path.parent.glob("*.partial"))


def test_verify_command_exit_codes(
    pg18: PgServer, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_sample_db(pg18, "vcmd", rows=100, vectors=False)
    config, backup = _setup(workdir, pg18, "vcmd")
    code, out, _ = _run(capsys, "verify", "-c", str(config), "vcmd")
    assert code == 0, out
    assert "PASSED" in out and "row_counts" in out
    with backup.path.open("r+b") as fh:
        fh.seek(100)
        byte = fh.read(1)
        fh.seek(100)
        fh.write(bytes([byte[0] ^ 0xFF]))
    code, out, _ = _run(capsys, "verify", "-c", str(config), "vcmd", backup.backup_id[:8], "--json")
    assert code == 1
    report = json.loads(out)
    assert report["passed"] is False
    assert report["checks"][-1]["name"] == "checksum"
