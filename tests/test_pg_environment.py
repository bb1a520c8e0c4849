"""Child environments: allow-listed, so a tool never sees the daemon's ``password_env`` values."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import cast

import pytest

from pgwarden.archive.manifest import Manifest
from pgwarden.backup import readback
from pgwarden.pg.binaries import Tool
from pgwarden.pg.environment import DEFAULT_PATH, base_environment, local_tool_environment
from pgwarden.restore import pgrestore, staging
from tests.helpers import pipe_with

SCRIPT = """#!/bin/sh
env > "$0.env"
cat > /dev/null
echo ';; a table of contents line'
"""


@pytest.fixture
def daemon_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGWARDEN_X_PASSWORD", "canary-env-secret")
    monkeypatch.setenv("PGPASSWORD", "canary-pgpassword")
    monkeypatch.setenv("PGSSLMODE", "require")
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.setenv("LC_MESSAGES", "C")


@pytest.fixture
def fake_pg_restore(tmp_path: Path) -> Tool:
    """A "pg_restore" that records the environment it was started with."""
    path = tmp_path / "pg_restore"
    path.write_text(SCRIPT)
    path.chmod(0o755)
    return Tool(path=path, major=18, version="18.0")


def _seen(tool: Tool) -> dict[str, str]:
    text = Path(f"{tool.path}.env").read_text()
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def test_base_environment_is_allow_listed() -> None:
    daemon = {
        "PATH": "/p",
        "HOME": "/h",
        "LANG": "C.UTF-8",
        "LC_ALL": "C",
        "TZ": "UTC",
        "PGWARDEN_X_PASSWORD": "s",
        "PGPASSWORD": "s",
        "PGHOST": "db",
        "PGTZ": "UTC",
        "AWS_SECRET_ACCESS_KEY": "s",
    }
    plain = {"PATH": "/p", "HOME": "/h", "LANG": "C.UTF-8", "LC_ALL": "C", "TZ": "UTC"}
    assert base_environment(environ=daemon) == plain
    assert base_environment(libpq=True, environ=daemon) == {**plain, "PGHOST": "db", "PGTZ": "UTC"}
    assert base_environment(environ={}) == {"PATH": DEFAULT_PATH}


@pytest.mark.usefixtures("daemon_env")
def test_readback_pg_restore_does_not_see_the_daemons_secrets(fake_pg_restore: Tool) -> None:
    check = readback.StreamCheck("custom", fake_pg_restore, None)
    source, _ = pipe_with(b"PGDMP\x01\x63\x00")  # a version only pg_restore may know
    try:
        with source:
            for _ in check.chunks(source):
                pass
        check.finish()
    finally:
        check.close()
    seen = _seen(fake_pg_restore)
    assert "PGWARDEN_X_PASSWORD" not in seen and "PGPASSWORD" not in seen
    assert "canary" not in Path(f"{fake_pg_restore.path}.env").read_text()
    assert seen["LANG"] == "C.UTF-8" and seen["LC_MESSAGES"] == "C"
    assert seen["PG_COLOR"] == "never"
    # exactly the allow-listed environment (plus what sh sets itself)
    assert set(seen) - {"PWD", "SHLVL", "_", "OLDPWD"} == set(local_tool_environment())


@pytest.mark.usefixtures("daemon_env")
def test_pg_restore_list_does_not_see_the_daemons_secrets(
    fake_pg_restore: Tool, tmp_path: Path
) -> None:
    archive = tmp_path / "a.dump"
    archive.write_bytes(b"PGDMP")
    # listing a file reads no manifest
    plan = pgrestore.RestorePlan(cast(Manifest, None), archive, fake_pg_restore)
    result = pgrestore.list_archive(plan, staging.Staged("", 5, archive), threading.Event())
    assert result.passed, result.detail
    seen = _seen(fake_pg_restore)
    assert "PGWARDEN_X_PASSWORD" not in seen and "PGPASSWORD" not in seen
    assert "PGSSLMODE" not in seen  # it connects nowhere: no libpq defaults either
