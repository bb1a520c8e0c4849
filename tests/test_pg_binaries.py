"""Finding pg_dump & co. among the real installations, and the server's version."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pgwarden.errors import IncompatibleToolError, ToolError
from pgwarden.pg.binaries import candidate_paths, find_tool, probe_tool
from pgwarden.pg.server import format_version_num, server_major, server_version
from tests.pgservers import PG15_BIN, PgServer, embedded_bin_dir


def _fake_tool(directory: Path, name: str, output: str) -> Path:
    """A stand-in binary for the version parser's odd cases (not a stand-in for PostgreSQL)."""
    path = directory / name
    path.write_text(f"#!/bin/sh\necho '{output}'\n")
    path.chmod(0o755)
    return path


def test_pg15_pg_dump_found_in_debian_dir() -> None:
    tool = find_tool("pg_dump", min_major=15)
    assert tool.path == PG15_BIN / "pg_dump"
    assert tool.major == 15
    assert tool.version.startswith("15.")
    assert tool.name == "pg_dump"


def test_embedded_pg18_found_when_18_is_needed() -> None:
    tool = find_tool("pg_dump", min_major=18)
    assert tool.path == embedded_bin_dir() / "pg_dump"
    assert tool.major == 18
    assert tool.version.startswith("18.")
    restore = find_tool("pg_restore", min_major=18)
    assert restore.path == embedded_bin_dir() / "pg_restore"


def test_bin_dir_is_the_only_place_looked_at() -> None:
    with pytest.raises(IncompatibleToolError) as info:
        find_tool("pg_dump", min_major=18, bin_dir=PG15_BIN, server_version="18.6")
    message = str(info.value)
    found = probe_tool(PG15_BIN / "pg_dump")
    assert f"pg_dump {found.version} ({PG15_BIN / 'pg_dump'})" in message
    assert "cannot dump a PostgreSQL 18.6 server" in message
    assert "bin_dir" in message
    assert str(embedded_bin_dir()) not in message
    assert info.value.tool == "pg_dump"
    assert isinstance(info.value, ToolError)
    assert find_tool("pg_dump", min_major=15, bin_dir=PG15_BIN).path == PG15_BIN / "pg_dump"


def test_nothing_new_enough_lists_every_candidate() -> None:
    with pytest.raises(IncompatibleToolError) as info:
        find_tool("pg_dump", min_major=99)
    message = str(info.value)
    assert f"({PG15_BIN / 'pg_dump'})" in message
    assert f"({embedded_bin_dir() / 'pg_dump'})" in message
    assert "(/usr/bin/pg_dump)" in message  # Debian's pg_wrapper answers --version as well
    assert "install postgresql-client-99 or set bin_dir" in message


def test_empty_bin_dir(tmp_path: Path) -> None:
    with pytest.raises(IncompatibleToolError, match=f"no pg_dump found in bin_dir {tmp_path}"):
        find_tool("pg_dump", min_major=15, bin_dir=tmp_path)


def test_search_order_and_no_duplicates() -> None:
    paths = candidate_paths("pg_dump")
    assert paths.index(PG15_BIN / "pg_dump") < paths.index(Path("/usr/bin/pg_dump"))
    assert paths[-1] == embedded_bin_dir() / "pg_dump"  # a fallback only: built without SSL
    real = [os.path.realpath(p) for p in paths]
    assert len(real) == len(set(real))


def test_unusable_and_development_versions(tmp_path: Path) -> None:
    _fake_tool(tmp_path, "pg_dump", "hello")
    with pytest.raises(IncompatibleToolError, match="printed no PostgreSQL version"):
        find_tool("pg_dump", min_major=15, bin_dir=tmp_path)
    dev = _fake_tool(tmp_path, "pg_dump", "pg_dump (PostgreSQL) 19devel")
    os.utime(dev, ns=(1, 1))  # a changed binary is probed again, not served from the cache
    tool = find_tool("pg_dump", min_major=18, bin_dir=tmp_path)
    assert (tool.major, tool.version) == (19, "19devel")


def test_probe_failures_are_tool_errors(tmp_path: Path) -> None:
    failing = tmp_path / "pg_restore"
    failing.write_text("#!/bin/sh\necho 'broken install' >&2\nexit 2\n")
    failing.chmod(0o755)
    with pytest.raises(ToolError, match="broken install"):
        probe_tool(failing)


def test_server_version(pg18: PgServer, pg15: PgServer) -> None:
    for server, major in ((pg18, 18), (pg15, 15)):
        with server.connect() as conn:
            assert server_major(conn) == major
            shown = conn.execute("SHOW server_version").fetchone()
            assert shown is not None
            assert str(shown[0]).startswith(server_version(conn))
            assert server_version(conn).startswith(f"{major}.")


def test_format_version_num() -> None:
    assert format_version_num(180006) == "18.6"
    assert format_version_num(150018) == "15.18"
    assert format_version_num(90624) == "9.6.24"
