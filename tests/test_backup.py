"""Backups end to end on real servers: round trips through stock tools, exact facts, faults."""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path
from typing import BinaryIO

import pytest

from pgwarden.archive.manifest import Manifest
from pgwarden.backup.take import BackupRequest, take_backup
from pgwarden.errors import IncompatibleToolError
from tests.helpers import make_config, open_env, pipe_with, target_doc
from tests.pgservers import PG15_BIN, PgServer
from tests.sampledata import (
    large_object_digest,
    make_rich_db,
    make_sample_db,
    sequence_values,
    table_fingerprints,
)


def _backup(workdir: Path, server: PgServer, db: str, **backup: object):  # type: ignore[no-untyped-def]
    config = make_config(workdir, [target_doc(server, db, backup={"retries": 0, **backup})])
    env = open_env(config)
    outcome = take_backup(BackupRequest(config.targets[0], config, env.catalog, env.storage))
    return env, outcome


def _restore_custom(server: PgServer, archive: Path, into: str, *, zst: bool) -> None:
    server.create_database(into)
    restore = [
        str(server.bin_dir / "pg_restore"),
        "--no-owner",
        "--exit-on-error",
        "-d",
        server.dsn(into),
    ]
    if zst:
        plain = archive.with_suffix("")
        subprocess.run(["zstd", "-q", "-d", "-f", "-o", str(plain), str(archive)], check=True)
        subprocess.run([*restore, "--jobs=2", str(plain)], check=True, capture_output=True)
        plain.unlink()
    else:
        subprocess.run([*restore, str(archive)], check=True, capture_output=True)


def _same(server: PgServer, a: str, b: str) -> None:
    assert table_fingerprints(server, b) == table_fingerprints(server, a)
    assert sequence_values(server, b) == sequence_values(server, a)
    assert large_object_digest(server, b) == large_object_digest(server, a)


def test_custom_round_trip_with_stock_pg_restore(pg18: PgServer, workdir: Path) -> None:
    make_rich_db(pg18, "rich")
    env, outcome = _backup(workdir, pg18, "rich")
    assert outcome.path.name.endswith(".dump.zst")
    assert oct(outcome.path.stat().st_mode & 0o777) == "0o600"
    assert oct(outcome.path.parent.stat().st_mode & 0o777) == "0o700"
    assert not list(outcome.path.parent.glob("*.partial"))
    manifest = Manifest.load(outcome.manifest_path)
    assert manifest.sha256 == outcome.sha256
    counts = {t.qualified: t.rows for t in manifest.tables}
    assert counts["public.users"] == table_fingerprints(pg18, "rich")["public.users"][0]
    assert any(e["name"] == "vector" for e in manifest.extensions)
    assert manifest.vector_probes and all(len(p.neighbours) == 5 for p in manifest.vector_probes)
    _restore_custom(pg18, outcome.path, "rich_restored", zst=True)
    _same(pg18, "rich", "rich_restored")
    record = env.catalog.get_backup(outcome.backup_id)
    assert record.status == "complete"
    assert record.sha256 == outcome.sha256


def test_plain_sql_gz_restores_with_the_strategys_own_command(
    pg18: PgServer, workdir: Path
) -> None:
    make_rich_db(pg18, "rich_plain", large_objects=2)
    _, outcome = _backup(workdir, pg18, "rich_plain", format="plain")
    assert outcome.path.name.endswith(".sql.gz")
    pg18.create_database("rich_plain_restored")
    # the strategy: gunzip -c backup.sql.gz | psql myproject_restore_test
    subprocess.run(
        f"gunzip -c {outcome.path} | {pg18.bin_dir / 'psql'} -q -v ON_ERROR_STOP=1 "
        f"'{pg18.dsn('rich_plain_restored')}' > /dev/null",
        shell=True,
        check=True,
    )
    _same(pg18, "rich_plain", "rich_plain_restored")
    assert b"PostgreSQL database dump complete" in gzip.open(outcome.path).read()[-4096:]


def test_custom_gzip_and_directory_formats(pg18: PgServer, workdir: Path) -> None:
    make_sample_db(pg18, "formats", rows=300)
    _, gz = _backup(workdir / "gz", pg18, "formats", compression="gzip")
    assert gz.path.name.endswith(".dump")
    _restore_custom(pg18, gz.path, "formats_gz", zst=False)
    _same(pg18, "formats", "formats_gz")
    _, directory = _backup(workdir / "dir", pg18, "formats", format="directory", jobs=2)
    assert directory.path.is_dir()
    pg18.create_database("formats_dir")
    subprocess.run(
        [
            str(pg18.bin_dir / "pg_restore"),
            "--no-owner",
            "-j2",
            "-d",
            pg18.dsn("formats_dir"),
            str(directory.path),
        ],
        check=True,
    )
    _same(pg18, "formats", "formats_dir")
    manifest = json.loads(directory.manifest_path.read_text())
    assert manifest["files"] and "toc.dat" in manifest["files"]


def test_pg15_pg_dump_refused_for_pg18_server(pg18: PgServer, workdir: Path) -> None:
    make_sample_db(pg18, "old_dump", rows=10, vectors=False)
    config = make_config(workdir, [{**target_doc(pg18, "old_dump"), "bin_dir": str(PG15_BIN)}])
    env = open_env(config)
    with pytest.raises(IncompatibleToolError) as info:
        take_backup(BackupRequest(config.targets[0], config, env.catalog, env.storage))
    message = str(info.value)
    assert "15." in message
    assert "18" in message
    assert not list((workdir / "backups").rglob("*.partial"))


def test_pg18_pg_dump_backs_up_pg15_server(pg15: PgServer, pg18: PgServer, workdir: Path) -> None:
    make_sample_db(pg15, "from15", rows=200, vectors=False)
    config = make_config(
        workdir,
        [{**target_doc(pg15, "from15"), "bin_dir": str(pg18.bin_dir), "backup": {"retries": 0}}],
    )
    env = open_env(config)
    outcome = take_backup(BackupRequest(config.targets[0], config, env.catalog, env.storage))
    manifest = Manifest.load(outcome.manifest_path)
    assert manifest.server["version_num"] // 10000 == 15
    assert manifest.pg_dump["version"].startswith("18")


def test_globals_are_kept_in_the_manifest_without_passwords(pg18: PgServer, workdir: Path) -> None:
    make_sample_db(pg18, "withroles", rows=10, vectors=False)
    pg18.execute("DROP ROLE IF EXISTS app_owner")
    pg18.execute("CREATE ROLE app_owner LOGIN PASSWORD 'canary-role-secret'")
    pg18.execute("ALTER TABLE users OWNER TO app_owner", "withroles")
    _, outcome = _backup(workdir, pg18, "withroles", dump_globals=True)
    manifest = json.loads(outcome.manifest_path.read_text())
    sql = manifest["globals"]["sql"]
    assert "CREATE ROLE app_owner" in sql
    assert "canary-role-secret" not in outcome.manifest_path.read_text()
    assert "SCRAM" not in sql


def test_stream_check_parses_the_archive_to_its_end(pg18: PgServer, workdir: Path) -> None:
    """The parse that runs while a backup is written rejects a truncated archive even when
    the compression around it is intact (pg_restore --list alone would accept it)."""
    from pgwarden.archive import compress
    from pgwarden.backup import readback
    from pgwarden.errors import BackupError
    from pgwarden.pg.binaries import find_tool

    make_sample_db(pg18, "streamcheck", rows=2000, vectors=False)
    archive = workdir / "a.dump"
    subprocess.run(
        [str(pg18.bin_dir / "pg_dump"), "-Fc", "-Z0", "-f", str(archive), pg18.dsn("streamcheck")],
        check=True,
    )
    data = archive.read_bytes()
    tool = find_tool("pg_restore", min_major=18, bin_dir=pg18.bin_dir)

    def through_pipe(payload: bytes) -> BinaryIO:
        # a pipe, as pg_dump's stdout is
        return pipe_with(payload)[0]

    def from_file(payload: bytes) -> BinaryIO:
        # not a pipe
        path = workdir / "payload"
        path.write_bytes(payload)
        return path.open("rb", buffering=0)

    def run(source: BinaryIO) -> int:
        check = readback.StreamCheck("custom", tool, None)
        total = 0
        with source:
            try:
                for chunk in compress.zstd_compress(check.chunks(source)):
                    total += len(chunk)
                check.finish()
            finally:
                check.close()
        return total

    truncated = data[: len(data) * 2 // 3]
    listed = subprocess.run(
        [str(tool.path), "--list"], input=truncated, capture_output=True, check=False
    )
    assert listed.returncode == 0  # --list is fooled by a truncated archive...
    for source in (through_pipe, from_file):
        assert run(source(data)) > 0
        with pytest.raises(BackupError, match="truncated inside the data block"):
            run(source(truncated))  # ...the framing check is not
