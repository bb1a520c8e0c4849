"""A real PgBouncer in front of a test PostgreSQL server, and the ``pgbouncer_factory`` fixture.

The Debian ``pgbouncer`` binary (1.18 on Debian 12) runs in the foreground as an unprivileged
user (it refuses root) with ``auth_type = trust`` and an auth file listing the users it lets in,
on a free loopback port, with every database forwarded to the server:
``[databases] * = host=127.0.0.1 port=<server port>``.  Its log goes to ``pgbouncer.log`` in its
folder.  A missing binary, or a PgBouncer that does not accept connections, fails the test.

Use it as a pytest plugin (``pytest_plugins = ["tests.pgbouncer"]`` in the root conftest) or
import the fixture into a test module.  Tests in transaction pooling mode connect with
``prepare_threshold=None``; the admin console (``admin()`` / ``show()``) needs autocommit and
the simple query protocol, which ``psycopg.ClientCursor`` provides.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import psycopg
import pytest
from psycopg import sql

from tests.pgservers import PgServer, free_port, temp_base

PoolMode = Literal["session", "transaction", "statement"]

PGBOUNCER_CANDIDATES = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer")
DEFAULT_RUN_AS = "postgres"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0


def find_pgbouncer(candidates: Iterable[str] = PGBOUNCER_CANDIDATES) -> Path:
    """The pgbouncer binary: ``PATH`` first, then the Debian locations; raise if there is none."""
    found = shutil.which("pgbouncer")
    if found:
        return Path(found)
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            return Path(candidate)
    raise FileNotFoundError("pgbouncer is not installed (apt-get install pgbouncer)")


def _quote(value: str) -> str:
    """A double-quoted auth-file field (``"`` doubled, as PgBouncer reads it)."""
    return '"' + value.replace('"', '""') + '"'


@dataclass
class PgBouncer:
    """One PgBouncer process; ``start()``/``stop()``, or use it as a context manager."""

    server: PgServer
    directory: Path
    pool_mode: PoolMode = "transaction"
    default_pool_size: int = 5
    users: tuple[str, ...] = ("postgres",)
    settings: dict[str, str | int] = field(default_factory=dict)
    run_as: str = DEFAULT_RUN_AS
    binary: Path = field(default_factory=find_pgbouncer)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def ini(self) -> Path:
        return self.directory / "pgbouncer.ini"

    @property
    def logfile(self) -> Path:
        return self.directory / "pgbouncer.log"

    # -- connection strings ----------------------------------------------------------------------

    def dsn(self, dbname: str = "postgres", user: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} dbname={dbname} user={user}"

    def uri(self, dbname: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"

    def admin_dsn(self) -> str:
        return self.dsn("pgbouncer", "postgres")

    def connect(self, dbname: str = "postgres", user: str = "postgres") -> psycopg.Connection:
        """A client connection through the pooler (no server-side prepared statements)."""
        return psycopg.connect(self.dsn(dbname, user), autocommit=True, prepare_threshold=None)

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        """The admin console: autocommit, simple query protocol."""
        return psycopg.connect(
            self.admin_dsn(), autocommit=True, cursor_factory=psycopg.ClientCursor
        )

    def show(self, what: str) -> list[dict[str, object]]:
        """``SHOW <what>`` on the admin console, each row as ``{column name: value}``."""
        if not what.replace("_", "").isalpha():
            raise ValueError(f"not a SHOW command: {what!r}")
        with self.admin() as conn, conn.cursor() as cur:
            cur.execute(sql.SQL("SHOW {}").format(sql.SQL(what.upper())))
            names = [c.name for c in cur.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def pools(self, dbname: str | None = None) -> list[dict[str, object]]:
        return [p for p in self.show("pools") if dbname is None or p["database"] == dbname]

    # -- lifecycle -------------------------------------------------------------------------------

    def _settings(self) -> dict[str, str | int]:
        base: dict[str, str | int] = {
            "listen_addr": "127.0.0.1",
            "listen_port": self.port,
            "unix_socket_dir": str(self.directory),
            "auth_type": "trust",
            "auth_file": str(self.directory / "userlist.txt"),
            "admin_users": "postgres",
            "stats_users": "postgres",
            "pool_mode": self.pool_mode,
            "default_pool_size": self.default_pool_size,
            "max_client_conn": 200,
            "ignore_startup_parameters": "extra_float_digits",
            "server_login_retry": 1,
        }
        base.update(self.settings)
        return base

    def write_config(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        target = f"host=127.0.0.1 port={self.server.port}"
        lines = ["[databases]", f"* = {target}", "", "[pgbouncer]"]
        lines += [f"{key} = {value}" for key, value in self._settings().items()]
        users = dict.fromkeys(("postgres", *self.users))
        auth = "".join(f"{_quote(user)} {_quote('')}\n" for user in users)
        for path, text in (
            (self.ini, "\n".join(lines) + "\n"),
            (self.directory / "userlist.txt", auth),
        ):
            path.write_text(text)
            path.chmod(0o600)
            self._give(path)
        self.directory.chmod(0o700)
        self._give(self.directory)

    def _give(self, path: Path) -> None:
        if os.geteuid() == 0:
            shutil.chown(path, self.run_as, self.run_as)

    def start(self) -> None:
        if self.process is not None:
            raise RuntimeError("pgbouncer already started")
        self.write_config()
        as_user: dict[str, object] = {}
        if os.geteuid() == 0:  # pgbouncer refuses to run as root
            as_user = {"user": self.run_as, "group": self.run_as, "extra_groups": []}
        with self.logfile.open("ab") as log:
            self.process = subprocess.Popen(  # type: ignore[call-overload]
                [str(self.binary), str(self.ini)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                start_new_session=True,
                **as_user,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"pgbouncer exited with {self.process.returncode}:\n{self.log_text()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"pgbouncer did not listen on {self.port}:\n{self.log_text()}")

    def log_text(self) -> str:
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""

    def signal(self, signum: signal.Signals) -> None:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError("pgbouncer is not running")
        self.process.send_signal(signum)

    def reconfigure(self, **changes: str | int) -> None:
        """Rewrite the ini with ``changes`` and reload it (``RELOAD`` on the admin console)."""
        for key, value in changes.items():
            if key == "pool_mode":
                self.pool_mode = value  # type: ignore[assignment]
            elif key == "default_pool_size":
                self.default_pool_size = int(value)
            else:
                self.settings[key] = value
        self.write_config()
        with self.admin() as conn:
            conn.execute("RELOAD")

    def stop(self) -> None:
        """SIGTERM (immediate shutdown), then SIGKILL after ``STOP_TIMEOUT``."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)

    def __enter__(self) -> PgBouncer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


PgBouncerFactory = Callable[..., PgBouncer]


@pytest.fixture
def pgbouncer_factory(pg18: PgServer) -> Iterator[PgBouncerFactory]:
    """``make(pool_mode="transaction", default_pool_size=5, users=(), server=pg18, **settings)``.

    Each call starts one PgBouncer in front of ``server`` (the embedded PostgreSQL 18 by
    default); all are stopped and their folders removed when the test ends.
    """
    try:
        binary = find_pgbouncer()
    except FileNotFoundError as exc:
        pytest.fail(str(exc))
    started: list[PgBouncer] = []

    def make(
        pool_mode: PoolMode = "transaction",
        default_pool_size: int = 5,
        users: Iterable[str] = (),
        server: PgServer = pg18,
        **settings: str | int,
    ) -> PgBouncer:
        bouncer = PgBouncer(
            server=server,
            directory=temp_base("pgwarden-pgbouncer-") / "pgbouncer",
            pool_mode=pool_mode,
            default_pool_size=default_pool_size,
            users=tuple(users),
            settings=dict(settings),
            binary=binary,
        )
        started.append(bouncer)
        bouncer.start()
        return bouncer

    try:
        yield make
    finally:
        for bouncer in started:
            bouncer.stop()
            shutil.rmtree(bouncer.directory.parent, ignore_errors=True)
