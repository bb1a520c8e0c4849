"""The PgBouncer fixture: a real PgBouncer in front of PostgreSQL 18, its admin console parsed."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import pytest

from tests.pgbouncer import PgBouncer, find_pgbouncer, pgbouncer_factory
from tests.pgbouncer import PgBouncerFactory as Factory
from tests.pgservers import PgServer

# the fixture, until tests/conftest.py loads tests.pgbouncer as a plugin
__all__ = ["pgbouncer_factory"]

SHOW_POOLS_COLUMNS = {
    "database",
    "user",
    "cl_active",
    "cl_waiting",
    "sv_active",
    "sv_idle",
    "sv_used",
    "sv_tested",
    "sv_login",
    "maxwait",
    "maxwait_us",
    "pool_mode",
}


def _wait_for(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def test_queries_go_through_to_the_server(pgbouncer_factory: Factory, pg18: PgServer) -> None:
    bouncer = pgbouncer_factory()
    assert bouncer.port != pg18.port
    with bouncer.connect() as conn:
        row = conn.execute("SELECT current_setting('server_version_num')::int / 10000").fetchone()
        assert row == (18,)
        assert conn.execute("SELECT %s::int + 1", (41,)).fetchone() == (42,)
        server_port = conn.execute("SELECT inet_server_port()").fetchone()
        assert server_port == (pg18.port,)


def test_show_pools_by_column_name(pgbouncer_factory: Factory) -> None:
    bouncer = pgbouncer_factory(pool_mode="transaction", default_pool_size=3)
    with bouncer.connect() as conn:
        conn.execute("SELECT 1")
        pools = bouncer.pools("postgres")
    assert len(pools) == 1
    pool = pools[0]
    assert set(pool) >= SHOW_POOLS_COLUMNS
    assert pool["user"] == "postgres"
    assert pool["pool_mode"] == "transaction"
    assert int(pool["sv_idle"]) + int(pool["sv_used"]) + int(pool["sv_active"]) >= 1  # type: ignore[call-overload]
    assert int(pool["cl_waiting"]) == 0  # type: ignore[call-overload]
    config = {str(row["key"]): row["value"] for row in bouncer.show("config")}
    assert str(config["default_pool_size"]) == "3"
    assert {"total_xact_count", "total_query_count"} <= set(bouncer.show("stats")[0])


def test_saturated_pool_makes_clients_wait(pgbouncer_factory: Factory) -> None:
    """Session pooling with one server connection: a second client queues (cl_waiting)."""
    bouncer = pgbouncer_factory(pool_mode="session", default_pool_size=1)
    first = bouncer.connect()
    first.execute("SELECT 1")
    answers: list[object] = []

    def second_client() -> None:
        with bouncer.connect() as conn:
            answers.append(conn.execute("SELECT 2").fetchone())

    thread = threading.Thread(target=second_client)
    thread.start()
    try:
        _wait_for(lambda: int(bouncer.pools("postgres")[0]["cl_waiting"]) == 1)  # type: ignore[call-overload]
        pool = bouncer.pools("postgres")[0]
        assert int(pool["sv_active"]) == 1  # type: ignore[call-overload]
        assert answers == []
    finally:
        first.close()
        thread.join(10)
    assert answers == [(2,)]


def test_reconfigure_reloads(pgbouncer_factory: Factory) -> None:
    bouncer = pgbouncer_factory(default_pool_size=2)
    bouncer.reconfigure(default_pool_size=7, pool_mode="session")
    config = {str(row["key"]): str(row["value"]) for row in bouncer.show("config")}
    assert config["default_pool_size"] == "7"
    assert config["pool_mode"] == "session"


def test_extra_users_and_settings(pgbouncer_factory: Factory, pg18: PgServer) -> None:
    pg18.execute(
        "DO $$ BEGIN CREATE ROLE pgb_app LOGIN; EXCEPTION WHEN duplicate_object THEN END $$"
    )
    bouncer = pgbouncer_factory(users=["pgb_app"], max_client_conn=50)
    with psycopg.connect(bouncer.dsn(user="pgb_app"), prepare_threshold=None) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("pgb_app",)
    assert {p["user"] for p in bouncer.pools("postgres")} >= {"pgb_app"}
    config = {str(row["key"]): str(row["value"]) for row in bouncer.show("config")}
    assert config["max_client_conn"] == "50"
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(bouncer.dsn(user="not_in_auth_file"), connect_timeout=5)


def test_runs_unprivileged_and_stops(pgbouncer_factory: Factory) -> None:
    bouncer = pgbouncer_factory()
    assert bouncer.process is not None
    pid = bouncer.process.pid
    status = Path(f"/proc/{pid}/status").read_text()
    uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
    assert uid != "0"
    bouncer.stop()
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(bouncer.dsn(), connect_timeout=2)


def test_missing_binary_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="apt-get install pgbouncer"):
        find_pgbouncer(candidates=[str(tmp_path / "pgbouncer")])
    assert find_pgbouncer().name == "pgbouncer"  # the real one is found outside the test PATH


def test_context_manager(pg18: PgServer, workdir: Path) -> None:
    with (
        PgBouncer(server=pg18, directory=workdir / "bouncer") as bouncer,
        bouncer.connect() as conn,
    ):
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert bouncer.process is None
