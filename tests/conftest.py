"""Session fixtures: real PostgreSQL 18 (embedded, with pgvector) and PostgreSQL 15 servers.

A server that cannot start fails the whole run (``pytest.exit``): nothing here skips.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pgservers import PgServer, start_pg15, start_pg18, temp_base

pytest_plugins = ["tests.pgbouncer", "tests.s3server"]

_RUNTIME = Path(f"/tmp/pgwarden-test-runtime-{os.getuid()}")
_RUNTIME.mkdir(mode=0o700, exist_ok=True)
os.environ.setdefault("XDG_RUNTIME_DIR", str(_RUNTIME))


def _server(kind: str) -> Iterator[PgServer]:
    base = temp_base(f"pgwarden-{kind}-")
    try:
        server = start_pg18(base) if kind == "pg18" else start_pg15(base)
    except Exception as exc:
        log = base / "server.log"
        detail = log.read_text() if log.exists() else ""
        pytest.exit(f"cannot start {kind}: {exc}\n{detail}", returncode=1)
    try:
        yield server
    finally:
        if server.is_running():
            server.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg18() -> Iterator[PgServer]:
    """PostgreSQL 18 with pgvector, on 127.0.0.1:<port> and a Unix socket."""
    yield from _server("pg18")


@pytest.fixture(scope="session")
def pg15() -> Iterator[PgServer]:
    """Debian's PostgreSQL 15, on 127.0.0.1:<port> and a Unix socket."""
    yield from _server("pg15")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A per-test folder readable by the server users (for storage, state, sockets)."""
    tmp_path.chmod(0o755)
    for parent in tmp_path.parents:
        if parent == Path("/"):
            break
        parent.chmod(parent.stat().st_mode | 0o055)
    return tmp_path


@pytest.fixture
def small_disk(workdir: Path) -> Iterator[Path]:
    """A 12 MiB file system (tmpfs), for backups and spools that do not fit."""
    mount = workdir / "small"
    mount.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=12m,mode=0755", "tmpfs", str(mount)], check=True
    )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
