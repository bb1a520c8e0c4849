"""ConnSpec: conninfo handling, psycopg connections and the environment for libpq tools.

Password authentication is real: a role on the PG 15 cluster gets scram-sha-256 lines in front
of the cluster's trust rules (only for that role), so a wrong or missing password fails.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import Conninfo

from pgwarden.config import Credentials, Secret, TargetConfig
from pgwarden.errors import CredentialError
from pgwarden.pg.conninfo import LIBPQ_ENV, ConnSpec, tool_environment, write_pgpass
from pgwarden.pg.process import DEVNULL, check, run_tool, start_tool
from tests.pgservers import PG15_BIN, PgServer

SCRAM_ROLE = "pgwarden_scram_tester"
# a colon, a backslash, quotes and a space: everything pgpass and conninfo must escape
SCRAM_PASSWORD = "Canary:pw\\with 'quotes\" and:colons"


@contextlib.contextmanager
def scram_role(server: PgServer) -> Iterator[tuple[str, str]]:
    """Create SCRAM_ROLE with SCRAM_PASSWORD, require scram for it only; undo afterwards."""
    hba = server.datadir / "pg_hba.conf"
    original = hba.read_text()
    rules = (
        f"host all {SCRAM_ROLE} 127.0.0.1/32 scram-sha-256\nlocal all {SCRAM_ROLE} scram-sha-256\n"
    )
    with server.connect() as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(SCRAM_ROLE)))
        conn.execute("SET password_encryption = 'scram-sha-256'")
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(SCRAM_ROLE), sql.Literal(SCRAM_PASSWORD)
            )
        )
        hba.write_text(rules + original)
        conn.execute("SELECT pg_reload_conf()")
    _wait_until_password_required(server)
    try:
        yield SCRAM_ROLE, SCRAM_PASSWORD
    finally:
        hba.write_text(original)
        with server.connect() as conn:
            conn.execute("SELECT pg_reload_conf()")
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(SCRAM_ROLE)))


def _wait_until_password_required(server: PgServer) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            psycopg.connect(server.dsn(user=SCRAM_ROLE), connect_timeout=5).close()
        except psycopg.OperationalError:
            return
        time.sleep(0.05)
    raise AssertionError("the server never started asking for a password")


@pytest.fixture(scope="module")
def scram(pg15: PgServer) -> Iterator[tuple[str, str]]:
    with scram_role(pg15) as role:
        yield role


# -- parsing and transforming -------------------------------------------------------------------


def test_params_dbname_and_with_dbname() -> None:
    spec = ConnSpec("postgresql://app@db.example:6432/prod?sslmode=verify-full", Secret("pw"))
    assert spec.params() == {
        "user": "app",
        "host": "db.example",
        "port": "6432",
        "dbname": "prod",
        "sslmode": "verify-full",
    }
    assert spec.dbname == "prod"
    other = spec.with_dbname("scratch db")
    assert other.dbname == "scratch db"
    assert other.password == spec.password
    assert other.params()["host"] == "db.example"
    assert spec.with_params(sslmode=None).params().get("sslmode") is None
    assert ConnSpec("host=h").dbname is None


def test_from_target_resolves_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGW_CONNINFO_PW", "s3cret")
    target = TargetConfig(
        name="app", dsn="host=h dbname=app", credentials=Credentials(password_env="PGW_CONNINFO_PW")
    )
    spec = ConnSpec.from_target(target)
    assert spec.password is not None
    assert spec.password.reveal() == "s3cret"
    monkeypatch.delenv("PGW_CONNINFO_PW")
    with pytest.raises(CredentialError, match=r"targets\[app\]"):
        ConnSpec.from_target(target)


def test_redacted_drops_every_secret_parameter() -> None:
    spec = ConnSpec("host=h dbname=d password=pw1 sslpassword=pw2 sslmode=require")
    assert conninfo_to_dict(spec.redacted()) == {"host": "h", "dbname": "d", "sslmode": "require"}
    assert "pw" not in repr(spec)
    with pytest.raises(CredentialError, match="sslpassword"):
        spec.tool_conninfo()


def test_tool_conninfo_drops_passfile_when_we_supply_the_password() -> None:
    spec = ConnSpec("host=h dbname=d passfile=/home/x/.pgpass", Secret("pw"))
    assert "passfile" not in spec.tool_conninfo()
    assert "passfile" in ConnSpec("host=h dbname=d passfile=/x").tool_conninfo()


def test_every_libpq_environment_variable_is_mapped() -> None:
    """The table against the libpq psycopg runs with (18): nothing is silently dropped."""
    libpq = {
        o.keyword.decode(): o.envvar.decode()
        for o in Conninfo.get_defaults()
        if o.envvar is not None and o.keyword != b"password"
    }
    missing = {k: v for k, v in libpq.items() if LIBPQ_ENV.get(k) != v}
    assert missing == {}
    assert "password" not in LIBPQ_ENV


# -- the environment for tools -----------------------------------------------------------------


def test_tool_env_maps_params_and_keeps_secrets_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGPASSWORD", "inherited-secret")
    monkeypatch.setenv("PGWARDEN_APP_PASSWORD", "config-secret")
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "7")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    spec = ConnSpec(
        "host=/run/pg,10.0.0.2 port=5432,5433 user=backup dbname=app sslmode=require "
        "application_name=pgwarden-dump options='-c lock_timeout=5s' keepalives=1",
        Secret(SCRAM_PASSWORD),
    )
    tmp_path.chmod(0o700)
    env = spec.tool_env(tmp_path)
    assert env["PGHOST"] == "/run/pg,10.0.0.2"
    assert env["PGPORT"] == "5432,5433"
    assert env["PGUSER"] == "backup"
    assert env["PGDATABASE"] == "app"
    assert env["PGSSLMODE"] == "require"
    assert env["PGAPPNAME"] == "pgwarden-dump"
    assert env["PGOPTIONS"] == "-c lock_timeout=5s"
    assert env["PGCONNECT_TIMEOUT"] == "7"  # libpq's own variables pass through
    assert env["LC_ALL"] == "C.UTF-8"
    assert "PGPASSWORD" not in env
    assert "PGWARDEN_APP_PASSWORD" not in env
    for value in env.values():
        assert "secret" not in value
        assert "Canary" not in value
    pgpass = Path(env["PGPASSFILE"])
    assert pgpass.parent == tmp_path
    assert stat.S_IMODE(pgpass.stat().st_mode) == 0o600
    assert pgpass.read_text() == "*:*:*:backup:Canary\\:pw\\\\with 'quotes\" and\\:colons\n"


def test_pgpass_is_created_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = write_pgpass(tmp_path / "pgpass", Secret("x"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == "*:*:*:*:x\n"
    with pytest.raises(FileExistsError):
        write_pgpass(path, Secret("y"))
    with pytest.raises(CredentialError, match="line break"):
        write_pgpass(tmp_path / "other", Secret("a\nb"))


def test_tool_environment_is_private_and_removed(tmp_path: Path) -> None:
    spec = ConnSpec("host=h dbname=d", Secret("pw"))
    with tool_environment(spec, tmp_root=tmp_path) as env:
        pgpass = Path(env["PGPASSFILE"])
        assert pgpass.exists()
        assert stat.S_IMODE(pgpass.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE(pgpass.stat().st_mode) == 0o600
    assert not pgpass.exists()
    assert not pgpass.parent.exists()
    with tool_environment(ConnSpec("host=h dbname=d"), tmp_root=tmp_path) as env:
        assert "PGPASSFILE" not in env or not env["PGPASSFILE"].startswith(str(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_tool_environment_removes_pgpass_on_error(tmp_path: Path) -> None:
    spec = ConnSpec("host=h dbname=d", Secret("pw"))
    seen: list[Path] = []

    def fail_inside() -> None:
        with tool_environment(spec, tmp_root=tmp_path) as env:
            seen.append(Path(env["PGPASSFILE"]))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        fail_inside()
    assert seen
    assert not seen[0].exists()


# -- against a server that asks for the password -------------------------------------------------


def test_connect_with_password(pg15: PgServer, scram: tuple[str, str]) -> None:
    role, password = scram
    spec = ConnSpec(pg15.dsn(user=role), Secret(password))
    with spec.connect(autocommit=True) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (role,)
        assert conn.info.password == password  # it did travel, as a keyword
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        ConnSpec(pg15.dsn(user=role), Secret("wrong")).connect()
    with pytest.raises(psycopg.OperationalError):
        ConnSpec(pg15.dsn(user=role)).connect(passfile="/nonexistent")


def test_psql_authenticates_through_the_pgpass_file(pg15: PgServer, scram: tuple[str, str]) -> None:
    role, password = scram
    spec = ConnSpec(pg15.dsn(user=role), Secret(password))
    psql = str(PG15_BIN / "psql")
    with tool_environment(spec) as env:
        pgpass = Path(env["PGPASSFILE"])
        assert stat.S_IMODE(pgpass.stat().st_mode) == 0o600
        argv = [
            psql,
            "--no-psqlrc",
            "--no-password",
            "--tuples-only",
            "--no-align",
            "--dbname",
            spec.tool_conninfo(),
            "-c",
            "SELECT pg_sleep(3)",
            "-c",
            "SELECT current_user",
        ]
        assert all(password not in a and "Canary" not in a for a in argv)
        assert all("Canary" not in v for v in env.values())
        out: list[bytes] = []
        with start_tool(argv, env=env, stdout=DEVNULL) as tool:
            # what the kernel shows other users of this process: argv and environment
            # (read once psql has exec'd: before that the kernel shows the forked Python)
            deadline = time.monotonic() + 3
            while True:
                cmdline = Path(f"/proc/{tool.pid}/cmdline").read_bytes()
                environ = Path(f"/proc/{tool.pid}/environ").read_bytes()
                if cmdline.startswith(psql.encode()) or time.monotonic() > deadline:
                    break
                time.sleep(0.01)
            result = tool.wait()
        assert b"Canary" not in cmdline
        assert b"Canary" not in environ
        assert f"PGPASSFILE={pgpass}".encode() in environ
        check(result)
        result = check(run_tool(argv, env=env, stdout=out.append))
        assert b"".join(out).decode().strip() == role
    assert not pgpass.exists()


def test_psql_without_the_password_fails(pg15: PgServer, scram: tuple[str, str]) -> None:
    role, _ = scram
    spec = ConnSpec(pg15.dsn(user=role), Secret("not-the-password"))
    psql = str(PG15_BIN / "psql")
    with tool_environment(spec) as env:
        argv = [
            psql,
            "--no-psqlrc",
            "--no-password",
            "--dbname",
            spec.tool_conninfo(),
            "-c",
            "SELECT 1",
        ]
        result = run_tool(argv, env=env)
    assert result.returncode != 0
    assert "password authentication failed" in result.stderr_tail


def test_socket_connection_through_tool_env(pg15: PgServer, scram: tuple[str, str]) -> None:
    role, password = scram
    spec = ConnSpec(pg15.socket_dsn(), Secret(password)).with_params(user=role)
    out: list[bytes] = []
    with tool_environment(spec) as env:
        # the database comes from the environment alone here (PGHOST is a socket directory)
        argv = [
            str(PG15_BIN / "psql"),
            "--no-psqlrc",
            "--no-password",
            "-tAc",
            "SELECT current_user, inet_server_addr() IS NULL",
        ]
        check(run_tool(argv, env=env, stdout=out.append))
    assert b"".join(out).decode().strip() == f"{role}|t"
