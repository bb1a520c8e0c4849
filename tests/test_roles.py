"""``pgwarden config roles``: the printed roles, created as printed on PostgreSQL 18 and 15, are
enough for a backup, monitoring, a drill and a restore -- and nothing more; a role with less
fails with a message naming the missing grant.

Each server is the other's verification server: the backup role exists only on the production
server, the verification role (``CREATEDB``, nothing else) only on the other one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pgwarden.config import load, parse
from pgwarden.monitor.sampler import Sampler
from pgwarden.pg.roles import backup_grant_hint, render_sql, role_scripts
from tests.helpers import open_env
from tests.pgservers import PgServer
from tests.sampledata import make_rich_db, table_fingerprints

SUPERUSER = ("rolsuper", "rolcreaterole", "rolreplication", "rolbypassrls")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pgwarden.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _dsn(server: PgServer, db: str, user: str | None) -> str:
    who = f" user='{user}'" if user else ""
    return f"host=127.0.0.1 port={server.port} dbname={db}{who}"


def _config(
    workdir: Path, name: str, prod: PgServer, db: str, user: str | None, **verify: str
) -> Path:
    """A config file with one target ``db`` on ``prod`` as ``user``."""
    path = workdir / f"{name}.toml"
    verify_lines = "".join(f'  {k} = "{v}"\n' for k, v in verify.items())
    path.write_text(
        f"""
[daemon]
state_dir = "{workdir}/state"
socket = "{workdir}/ctl.sock"
[storage]
path = "{workdir}/backups"
[[targets]]
name = "app"
dsn = "{_dsn(prod, db, user)}"
bin_dir = "{prod.bin_dir}"
  [targets.backup]
  retries = 0
  [targets.verify]
{verify_lines}"""
    )
    path.chmod(0o600)
    return path


def _roles_json(config: Path, major: int) -> list[dict[str, Any]]:
    done = run_cli("config", "roles", "-c", str(config), "--server-version", str(major), "--json")
    assert done.returncode == 0, done.stderr
    scripts: list[dict[str, Any]] = json.loads(done.stdout)
    return scripts


def _create(scripts: list[dict[str, Any]], servers: list[PgServer], *, skip: str = "") -> list[str]:
    """Run every printed statement as the superuser where its script says (but ``skip``)."""
    by_address = {f"127.0.0.1:{s.port}": s for s in servers}
    ran = []
    for script in scripts:
        server = by_address[script["server"]]
        with server.connect(script["database"]) as conn:
            for statement in script["statements"]:
                if skip and skip in statement:
                    continue
                conn.execute(statement)
                ran.append(statement)
    return ran


def _role(server: PgServer, name: str) -> dict[str, Any]:
    with server.connect() as conn:
        cur = conn.execute(
            "SELECT rolcanlogin, rolcreatedb, " + ", ".join(SUPERUSER) + ", "
            "ARRAY(SELECT b.rolname::text FROM pg_auth_members m JOIN pg_roles b "
            "ON b.oid = m.roleid WHERE m.member = r.oid ORDER BY 1) "
            "FROM pg_roles r WHERE rolname = %s",
            (name,),
        )
        row = cur.fetchone()
    assert row is not None, f"role {name} missing"
    return {"login": row[0], "createdb": row[1], "powers": any(row[2:6]), "member_of": row[6]}


@pytest.mark.parametrize("kind", ["pg18", "pg15"])
def test_the_printed_roles_back_up_monitor_drill_and_nothing_more(
    pg18: PgServer, pg15: PgServer, workdir: Path, kind: str
) -> None:
    prod, other = (pg18, pg15) if kind == "pg18" else (pg15, pg18)
    db, backup_role, verify_role = f"roles_{kind}", f"Pgw Backup {kind}", f"pgw_verify_{kind}"
    make_rich_db(prod, db, rows=120, vectors=False, large_objects=2)
    verify_dsn = _dsn(other, "postgres", verify_role)
    config = _config(workdir, "pgwarden", prod, db, backup_role, dsn=verify_dsn)
    scripts = _roles_json(config, prod.major)
    assert [s["purpose"] for s in scripts] == ["backup", "monitoring", "verification"]
    assert {s["role"] for s in scripts} == {backup_role, verify_role}
    statements = _create(scripts, [pg18, pg15])
    assert f'CREATE ROLE "{backup_role}" LOGIN;' in statements
    assert f'GRANT pg_read_all_data TO "{backup_role}";' in statements
    assert f'CREATE ROLE "{verify_role}" LOGIN CREATEDB;' in statements
    assert not any("PASSWORD" in s.upper() for s in statements)
    # exactly these powers: nothing else
    assert _role(prod, backup_role) == {
        "login": True,
        "createdb": False,
        "powers": False,
        "member_of": ["pg_monitor", "pg_read_all_data"],
    }
    assert _role(other, verify_role) == {
        "login": True,
        "createdb": True,
        "powers": False,
        "member_of": [],
    }
    assert not prod.execute(f"SELECT 1 FROM pg_roles WHERE rolname = '{verify_role}'")
    assert not other.execute(f"SELECT 1 FROM pg_roles WHERE rolname = '{backup_role}'")

    # backup, as the backup role (large objects included)
    made = run_cli("backup", "-c", str(config), "app", "--json")
    assert made.returncode == 0, made.stderr
    backup = json.loads(made.stdout)

    # monitoring (the sampler) and `pgwarden check`, as the same role: every session visible
    env = open_env(load(config))
    sampler = Sampler()
    try:
        with prod.connect():  # a superuser session the role must see in detail
            sample = sampler.cycle(env.config).servers[0]
    finally:
        sampler.close()
        env.catalog.close()
    assert sample.up and sample.sample is not None, sample.error
    assert sample.sample.hidden == 0
    checked = json.loads(run_cli("check", "-c", str(config), "app", "--json").stdout)
    results = {r["check"]: r for r in checked["results"]}
    assert results["server.reachable"]["status"] == "pass"
    assert not [r for r in checked["results"] if "could not check" in r["detail"]]
    assert "sees every session" in json.dumps(checked)

    # the drill, as the verification role on the other server
    drilled = run_cli("verify", "-c", str(config), "app", "--json")
    assert drilled.returncode == 0, drilled.stdout + drilled.stderr
    assert json.loads(drilled.stdout)["passed"]
    left = [d for d in other.databases() if d.startswith("pgwarden_verify_")]
    assert not left, drilled.stderr

    # nothing more: the backup role cannot restore over production, nor create a database
    refused = run_cli("restore", "-c", str(config), "app", "--into", f"{db}_copy")
    assert refused.returncode == 1
    assert "permission denied to create database" in refused.stdout + refused.stderr, refused.stdout
    # a restore is the operator's: the same backup, restored by the database's owner
    admin = _config(workdir, "admin", prod, db, "postgres", dsn=verify_dsn)
    prod.drop_database(f"{db}_copy")
    restored = run_cli(
        "restore", "-c", str(admin), "app", backup["backup_id"][:8], "--into", f"{db}_copy"
    )
    assert restored.returncode == 0, restored.stderr
    assert table_fingerprints(prod, f"{db}_copy") == table_fingerprints(prod, db)


@pytest.mark.parametrize(
    ("left_out", "named"),
    [
        ("GRANT pg_read_all_data", "pg_read_all_data (PostgreSQL 14+) or"),
        ("LARGE OBJECT", "SELECT on every large object"),
    ],
    ids=["no-pg_read_all_data", "no-large-objects"],
)
def test_a_backup_role_with_less_fails_naming_the_missing_grant(
    pg18: PgServer, workdir: Path, left_out: str, named: str
) -> None:
    db = "roles_less"
    if db not in pg18.databases():
        make_rich_db(pg18, db, rows=50, vectors=False, large_objects=1)
    role = f"pgw_less_{len(left_out)}"
    config = _config(workdir, "less", pg18, db, role)
    scripts = [s for s in _roles_json(config, 18) if s["purpose"] == "backup"]
    _create(scripts, [pg18], skip=left_out)
    failed = run_cli("backup", "-c", str(config), "app")
    assert failed.returncode == 1
    assert named in failed.stderr and "see `pgwarden config roles`" in failed.stderr, failed.stderr
    assert not list((workdir / "backups").rglob("*.partial"))


def test_before_14_the_grants_and_default_privileges_work_as_psql_runs_them(
    pg15: PgServer, workdir: Path
) -> None:
    """``--server-version 13``: no pg_read_all_data, but USAGE/SELECT on what exists and default
    privileges for its owners -- a schema and a table created afterwards are backed up too.
    The SQL text runs as printed through psql (one server: no [targets.verify] dsn)."""
    db, role = "roles_pre14", "pgw_pre14"
    make_rich_db(pg15, db, rows=50, vectors=False, large_objects=1)
    config = _config(workdir, "pre14", pg15, db, role)
    text = run_cli("config", "roles", "-c", str(config), "--server-version", "13")
    assert text.returncode == 0, text.stderr
    assert "pg_read_all_data TO" not in text.stdout
    psql = [str(pg15.bin_dir / "psql"), "-X", "-v", "ON_ERROR_STOP=1", "-d", pg15.dsn(db)]
    ran = subprocess.run(psql, input=text.stdout, capture_output=True, text=True, check=False)
    assert ran.returncode == 0, ran.stderr
    assert _role(pg15, role) == {
        "login": True,
        "createdb": True,  # no verification server of its own: drills run here, as this role
        "powers": False,
        "member_of": ["pg_monitor"],
    }
    pg15.execute("CREATE SCHEMA later; CREATE TABLE later.t AS SELECT 1 AS x", dbname=db)
    made = run_cli("backup", "-c", str(config), "app", "--json")
    assert made.returncode == 0, made.stderr
    drilled = run_cli("verify", "-c", str(config), "app", "--json")
    assert drilled.returncode == 0, drilled.stdout + drilled.stderr


def test_an_untrusted_extension_needs_more_than_createdb_as_the_notes_say(
    pg18: PgServer, workdir: Path
) -> None:
    """pgvector is not marked trusted: a CREATEDB-only role cannot create it in the scratch
    database, and the drill says so (the printed notes warn about it)."""
    db, verify_role = "roles_vector", "pgw_verify_vec"
    make_rich_db(pg18, db, rows=30, large_objects=0)
    config = _config(workdir, "vec", pg18, db, "postgres", dsn=_dsn(pg18, "postgres", verify_role))
    verification = [s for s in _roles_json(config, 18) if s["purpose"] == "verification"]
    assert any("pgvector" in note and "SUPERUSER" in note for note in verification[0]["notes"])
    _create(verification, [pg18])
    assert run_cli("backup", "-c", str(config), "app").returncode == 0
    drilled = run_cli("verify", "-c", str(config), "app", "--json")
    assert drilled.returncode == 1
    assert 'permission denied to create extension \\"vector\\"' in drilled.stdout
    left = [d for d in pg18.databases() if d.startswith("pgwarden_verify_")]
    assert not left, drilled.stderr


# -- the SQL itself, from the configuration alone (no server) ---------------------------------


def _targets(*targets: dict[str, Any], **daemon: Any) -> Any:
    return parse({"daemon": daemon, "targets": list(targets)}, Path("/x.toml")).targets


def test_defaults_quoting_and_one_create_per_server() -> None:
    targets = _targets(
        {
            "name": "a",
            "dsn": "host=db port=5433 dbname=a",
            "verify": {"dsn": "host=v dbname=postgres"},
        },
        {"name": "b", "dsn": "host=db port=5433 dbname=b"},
        {"name": "c", "dsn": "postgresql://o%27k%22x@db/c"},
    )
    scripts = role_scripts(targets)
    text = render_sql(scripts)
    assert [(s.target, s.purpose, s.server, s.database, s.role) for s in scripts] == [
        ("a", "backup", "db:5433", "a", "pgwarden_backup"),
        ("a", "monitoring", "db:5433", "a", "pgwarden_backup"),
        ("a", "verification", "v:5432", "postgres", "pgwarden_verify"),
        ("b", "backup", "db:5433", "b", "pgwarden_backup"),
        ("b", "verification", "db:5433", "b", "pgwarden_backup"),
        ("c", "backup", "db:5432", "c", "o'k\"x"),
        ("c", "monitoring", "db:5432", "c", "o'k\"x"),
        ("c", "verification", "db:5432", "c", "o'k\"x"),
    ]
    assert text.count('CREATE ROLE "pgwarden_backup" LOGIN;') == 1  # a and b share it
    assert 'CREATE ROLE "pgwarden_verify" LOGIN CREATEDB;' in text
    assert 'ALTER ROLE "pgwarden_backup" CREATEDB;' in text  # b drills on production
    assert "targets[a].dsn names no user: add pgwarden_backup to it" in text
    assert "targets[a].verify.dsn names no user: add pgwarden_verify to it" in text
    assert 'CREATE ROLE "o\'k""x" LOGIN;' in text
    assert "r text := 'o''k\"x';" in text  # the DO blocks' literal
    assert "-- run on db:5433, in database b" in text
    assert '\\password "pgwarden_backup"' in text


def test_grants_follow_the_server_version() -> None:
    targets = _targets({"name": "a", "dsn": "postgresql://bk@db/a"})
    default = render_sql(role_scripts(targets))
    assert "PostgreSQL 14 or newer" in default
    assert "GRANT pg_read_all_data TO" in default and "ON LARGE OBJECTS" not in default
    assert "ON LARGE OBJECTS" in render_sql(role_scripts(targets, 18), 18)
    before = render_sql(role_scripts(targets, 13), 13)
    assert "pg_read_all_data TO" not in before
    assert "GRANT SELECT ON ALL TABLES IN SCHEMA" in before
    assert "ALTER DEFAULT PRIVILEGES FOR ROLE %I GRANT SELECT ON TABLES" in before


def test_the_command_never_prints_a_password(tmp_path: Path) -> None:
    config = tmp_path / "pgwarden.toml"
    config.write_text(
        """
[daemon]
allow_plaintext_passwords = true
[[targets]]
name = "app"
dsn = "postgresql://bk:hunter2-in-dsn@db/app"
  [targets.verify]
  dsn = "postgresql://vf@verify/postgres"
  password = "hunter3-in-toml"
"""
    )
    config.chmod(0o600)
    text = run_cli("config", "roles", "-c", str(config), "app")
    listing = run_cli("config", "roles", "-c", str(config), "--json")
    assert text.returncode == listing.returncode == 0, text.stderr + listing.stderr
    assert "hunter" not in text.stdout + listing.stdout
    sql_lines = [line for line in text.stdout.splitlines() if not line.startswith("--")]
    assert not [line for line in sql_lines if "PASSWORD" in line.upper()]
    scripts = json.loads(listing.stdout)
    assert not [s for x in scripts for s in x["statements"] if "PASSWORD" in s.upper()]
    assert {(s["server"], s["role"]) for s in scripts} == {("db:5432", "bk"), ("verify:5432", "vf")}
    assert all({"server", "role", "statements", "database"} <= set(s) for s in scripts)


def test_bad_arguments_are_usage_errors(tmp_path: Path) -> None:
    config = tmp_path / "pgwarden.toml"
    config.write_text('[[targets]]\nname = "app"\ndsn = "postgresql://bk@db/app"\n')
    old = run_cli("config", "roles", "-c", str(config), "--server-version", "9")
    assert old.returncode == 2 and "PostgreSQL 10 or newer" in old.stderr
    unknown = run_cli("config", "roles", "-c", str(config), "nope")
    assert unknown.returncode == 2 and "unknown target 'nope'" in unknown.stderr


@pytest.mark.parametrize(
    ("message", "grant"),
    [
        ("ERROR:  permission denied for table users", "SELECT on every table"),
        ("permission denied for schema archive (SQLSTATE 42501)", "USAGE on every schema"),
        ("permission denied for sequence s", "SELECT on every sequence"),
        ("could not open large object 7: ERROR:  permission denied for large object 7", "large"),
        ('FATAL:  permission denied for database "app"', "CONNECT on the database"),
        ('query would be affected by row-level security policy for table "t"', "BYPASSRLS"),
    ],
)
def test_a_refused_grant_is_named(message: str, grant: str) -> None:
    hint = backup_grant_hint(message)
    assert hint is not None and grant in hint and hint.endswith("see `pgwarden config roles`")
    assert backup_grant_hint("connection refused") is None
