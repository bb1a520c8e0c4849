"""Safe migrate end to end: a real Alembic project, the real ``alembic``, real PostgreSQL.

Each test writes its own application (``tests.test_migrate_support.AlembicApp``) and runs
:func:`pgwarden.migrate.safe_migrate` the way ``pgwarden migrate upgrade`` does.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from pgwarden import logsetup
from pgwarden.archive.manifest import Manifest
from pgwarden.migrate import (
    LedgerStore,
    MigrationFailed,
    MigrationRefused,
    inspect_project,
    locate,
    safe_migrate,
)
from pgwarden.pg.conninfo import ConnSpec
from tests.helpers import Env, make_config, open_env
from tests.pgservers import PgServer
from tests.test_migrate_support import AlembicApp, migrate_target, users_app


def _env(workdir: Path, pg18: PgServer, db: str, app: AlembicApp, **extra: object) -> Env:
    pg18.create_database(db)
    config = make_config(workdir, [migrate_target(pg18, db, app, **extra)])
    return open_env(config)


def _migrate(env: Env, **kw: object):  # type: ignore[no-untyped-def]
    return safe_migrate(env.config.targets[0], env.config, env.catalog, env.storage, **kw)  # type: ignore[arg-type]


def _check(env: Env):  # type: ignore[no-untyped-def]
    target = env.config.targets[0]
    store = LedgerStore(env.config.daemon.state_dir, target.name)
    return inspect_project(
        locate(env.config, target),
        store,
        ConnSpec.from_target(target),
        require_numbered=True,
        record=True,
    )


def _version(pg18: PgServer, db: str) -> list[object]:
    return [r[0] for r in pg18.execute("SELECT version_num FROM alembic_version", db)]


def _count(pg18: PgServer, db: str, table: str) -> int:
    return int(pg18.execute(f"SELECT count(*) FROM {table}", db)[0][0])  # type: ignore[call-overload]


def test_upgrade_takes_a_pre_migration_backup_first_then_applies(
    pg18: PgServer, workdir: Path
) -> None:
    app = users_app(workdir / "app")
    env = _env(workdir, pg18, "mig_up", app)
    first = _migrate(env)
    assert first.status == "migrated"
    assert first.revision_before == ()
    assert first.revision_after == (app.revisions[1],)
    assert first.applied == tuple(app.revisions)
    assert _count(pg18, "mig_up", "users") == 3

    # the next migration changes the data: the backup must hold the state before it
    app.add(
        "003_add_user_email.py",
        "ALTER TABLE users ADD COLUMN email text",
        "INSERT INTO users (name) VALUES ('margaret'), ('edsger')",
    )
    second = _migrate(env)
    assert second.status == "migrated"
    assert second.revision_before == (app.revisions[1],)
    assert second.revision_after == second.applied == (app.revisions[2],)
    assert _count(pg18, "mig_up", "users") == 5
    assert second.backup_id is not None and second.backup_path is not None
    record = env.catalog.get_backup(second.backup_id)
    assert record.status == "complete"
    assert "pre-migration" in record.tags
    manifest = Manifest.load(Path(second.backup_path + ".manifest.json"))
    assert "pre-migration" in manifest.tags
    rows = {t.qualified: t.rows for t in manifest.tables}
    assert rows["public.users"] == 3  # taken before the migration ran
    assert manifest.finished_at is not None and record.finished_at is not None

    ledger = LedgerStore(env.config.daemon.state_dir, "mig_up").load()
    assert sorted(ledger.entries) == [
        "001_initial_schema.py",
        "002_add_users_table.py",
        "003_add_user_email.py",
    ]
    assert [u.status for u in ledger.upgrades] == ["migrated", "migrated"]
    assert ledger.upgrades[-1].backup_id == second.backup_id

    again = _migrate(env)
    assert again.status == "up-to-date"
    assert again.backup_id is None
    assert len(env.catalog.list_backups("mig_up")) == 2


def test_dry_run_plans_without_touching_anything(pg18: PgServer, workdir: Path) -> None:
    app = users_app(workdir / "app")
    env = _env(workdir, pg18, "mig_dry", app)
    plan = _migrate(env, dry_run=True)
    assert plan.status == "planned"
    assert plan.applied == tuple(app.revisions)
    assert plan.backup_plan is not None and "pre-migration" in plan.backup_plan
    assert plan.command.argv[1:] == ("-c", str(app.root / "alembic.ini"), "upgrade", "head")
    assert plan.command.cwd == app.root
    assert "DATABASE_URL=" in plan.command.shell_line()
    assert pg18.execute("SELECT to_regclass('alembic_version')", "mig_dry") == [(None,)]
    assert env.catalog.list_backups("mig_dry") == []
    assert not LedgerStore(env.config.daemon.state_dir, "mig_dry").path.exists()


def test_editing_a_released_migration_is_caught_and_refused(pg18: PgServer, workdir: Path) -> None:
    app = users_app(workdir / "app")
    env = _env(workdir, pg18, "mig_edit", app)
    _migrate(env)
    released = app.versions / "002_add_users_table.py"
    released.write_text(released.read_text().replace("'linus'", "'ken'"))
    report = _check(env)
    assert [p.code for p in report.errors] == ["released_edited"]
    assert report.errors[0].file == "002_add_users_table.py"

    app.add("003_add_user_email.py", "ALTER TABLE users ADD COLUMN email text")
    with pytest.raises(MigrationRefused) as refused:
        _migrate(env)
    assert "released_edited" in str(refused.value)
    assert _version(pg18, "mig_edit") == [app.revisions[1]]  # nothing ran
    assert len(env.catalog.list_backups("mig_edit")) == 1  # the first upgrade's, no new one


def test_deleting_a_released_migration_is_caught(pg18: PgServer, workdir: Path) -> None:
    app = users_app(workdir / "app")
    env = _env(workdir, pg18, "mig_del", app)
    _migrate(env)
    (app.versions / "002_add_users_table.py").unlink()
    report = _check(env)
    codes = sorted(p.code for p in report.errors)
    assert codes == ["released_deleted", "unknown_revision"]
    assert "002_add_users_table.py" in report.errors[0].message + report.errors[1].message
    with pytest.raises(MigrationRefused):
        _migrate(env)


def test_a_database_revision_no_file_defines_is_caught(pg18: PgServer, workdir: Path) -> None:
    app = users_app(workdir / "app")
    env = _env(workdir, pg18, "mig_unknown", app)
    pg18.execute(
        "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)", "mig_unknown"
    )
    pg18.execute("INSERT INTO alembic_version VALUES ('0badc0ffee00')", "mig_unknown")
    report = _check(env)
    assert [p.code for p in report.errors] == ["unknown_revision"]
    assert "0badc0ffee00" in report.errors[0].message
    assert report.pending == ()
    with pytest.raises(MigrationRefused):
        _migrate(env)
    assert _version(pg18, "mig_unknown") == ["0badc0ffee00"]


def test_bad_numbering_is_caught(pg18: PgServer, workdir: Path) -> None:
    app = users_app(workdir / "app")
    app.add("004_add_user_email.py", "ALTER TABLE users ADD COLUMN email text")
    app.add("add_orders.py", "CREATE TABLE orders (id serial PRIMARY KEY)")
    env = _env(workdir, pg18, "mig_numbers", app)
    report = _check(env)
    messages = [p.message for p in report.errors]
    assert all(p.code == "numbering" for p in report.errors)
    assert any("missing 003" in m for m in messages)
    assert any("add_orders.py is not named NNN_name.py" in m for m in messages)
    with pytest.raises(MigrationRefused):
        _migrate(env)
    assert pg18.execute("SELECT to_regclass('alembic_version')", "mig_numbers") == [(None,)]


def test_the_password_reaches_env_py_and_nothing_else(
    pg18: PgServer, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "s3cr3t:p@ss/w0rd%canary"
    monkeypatch.setenv("PGWARDEN_TEST_MIGRATE_PW", secret)
    probe = workdir / "probe.txt"
    app = users_app(workdir / "app", probe=probe)
    env = _env(workdir, pg18, "mig_secret", app, password_env="PGWARDEN_TEST_MIGRATE_PW")
    logs = io.StringIO()
    logsetup.configure("debug", "json", logs)
    try:
        outcome = _migrate(env)
        plan = _migrate(env, dry_run=True)
    finally:
        logging.getLogger().handlers.clear()
    assert probe.read_text() == secret  # env.py got it through $DATABASE_URL
    assert outcome.status == "migrated"
    for argv in (outcome.command.argv, plan.command.argv):
        assert not any(secret in arg or "s3cr3t" in arg for arg in argv)
    assert outcome.command.display_url is not None and ":***@" in outcome.command.display_url
    text = json.dumps(outcome.as_dict()) + json.dumps(plan.as_dict())
    text += outcome.command.shell_line() + repr(outcome)
    assert "s3cr3t" not in text
    logged = logs.getvalue()
    assert "password is ***" in logged  # env.py's careless line was logged, scrubbed
    assert "s3cr3t" not in logged and "canary" not in logged
    ledger = LedgerStore(env.config.daemon.state_dir, "mig_secret").path.read_text()
    assert "s3cr3t" not in ledger


def test_a_failing_migration_keeps_the_backup_and_reports_stderr(
    pg18: PgServer, workdir: Path
) -> None:
    app = users_app(workdir / "app")
    env = _env(workdir, pg18, "mig_fail", app)
    _migrate(env)
    app.add(
        "003_add_user_email.py",
        "ALTER TABLE users ADD COLUMN email text",
        "UPDATE no_such_table SET x = 1",
    )
    with pytest.raises(MigrationFailed) as failed:
        _migrate(env)
    outcome = failed.value.outcome
    assert outcome.status == "failed"
    assert 'relation "no_such_table" does not exist' in outcome.stderr_tail
    assert (outcome.error or "").startswith("alembic upgrade head exited with status 1: ")
    assert 'relation "no_such_table" does not exist' in (outcome.error or "")
    assert outcome.revision_before == outcome.revision_after == (app.revisions[1],)
    assert outcome.applied == ()
    # PostgreSQL's transactional DDL rolled the whole migration back
    assert pg18.execute(
        "SELECT count(*) FROM information_schema.columns WHERE column_name = 'email'", "mig_fail"
    ) == [(0,)]
    assert outcome.backup_id is not None and outcome.backup_path is not None
    assert Path(outcome.backup_path).is_file()
    assert env.catalog.get_backup(outcome.backup_id).status == "complete"
    assert outcome.backup_id[:8] in str(failed.value)
    ledger = LedgerStore(env.config.daemon.state_dir, "mig_fail").load()
    assert "003_add_user_email.py" not in ledger.entries  # never applied, still editable
    assert ledger.upgrades[-1].status == "failed"

    # fix forward: the unreleased file may still change; the upgrade then goes through
    app.versions.joinpath("003_add_user_email.py").write_text(
        app.versions.joinpath("003_add_user_email.py")
        .read_text()
        .replace("UPDATE no_such_table SET x = 1", "UPDATE users SET email = name")
    )
    done = _migrate(env)
    assert done.status == "migrated"
    complete = [b for b in env.catalog.list_backups("mig_fail") if b.status == "complete"]
    assert len(complete) == 3  # one per upgrade that had something to apply
    assert outcome.backup_id in {b.id for b in complete}


def test_a_migration_that_runs_too_long_is_stopped(pg18: PgServer, workdir: Path) -> None:
    app = users_app(workdir / "app")
    app.add("003_slow.py", "SELECT pg_sleep(30)")
    env = _env(workdir, pg18, "mig_slow", app)
    env.config = make_config(
        workdir,
        [
            migrate_target(
                pg18, "mig_slow", app, migrations=app.migrations(timeout=3, backup_before=False)
            )
        ],
    )
    with pytest.raises(MigrationFailed) as failed:
        _migrate(env)
    assert "timed out" in (failed.value.outcome.error or "")
    assert failed.value.outcome.backup_id is None
    assert pg18.execute("SELECT to_regclass('alembic_version')", "mig_slow") == [(None,)]


def test_env_py_ignoring_the_url_is_a_failure(pg18: PgServer, workdir: Path) -> None:
    app = users_app(workdir / "app")
    pg18.create_database("mig_elsewhere")
    env_py = app.root / "migrations" / "env.py"
    env_py.write_text(
        env_py.read_text().replace(
            'url = os.environ["DATABASE_URL"]', f"url = {pg18.uri('mig_elsewhere')!r}"
        )
    )
    env = _env(workdir, pg18, "mig_ignored", app)
    with pytest.raises(MigrationFailed) as failed:
        _migrate(env)
    assert "does env.py connect to $DATABASE_URL" in str(failed.value)
    assert _version(pg18, "mig_elsewhere") == [app.revisions[1]]


def test_migrations_run_as_their_own_role(pg18: PgServer, workdir: Path) -> None:
    """``[targets.migrations] dsn`` names the schema owner: the app's alembic connects as it,
    with the configured URL scheme, while backups keep using the target's own role."""
    pg18.execute("DROP ROLE IF EXISTS mig_owner")
    pg18.execute("CREATE ROLE mig_owner LOGIN")
    app = users_app(workdir / "app")
    migrations = {
        **app.migrations(),
        "url_scheme": "postgresql+psycopg",
        "dsn": f"postgresql://mig_owner@127.0.0.1:{pg18.port}/mig_owner_db",
    }
    pg18.create_database("mig_owner_db")
    pg18.execute("ALTER DATABASE mig_owner_db OWNER TO mig_owner")
    pg18.execute("ALTER SCHEMA public OWNER TO mig_owner", "mig_owner_db")
    config = make_config(
        workdir, [migrate_target(pg18, "mig_owner_db", app, migrations=migrations)]
    )
    env = open_env(config)
    plan = _migrate(env, dry_run=True)
    assert "postgresql+psycopg://mig_owner@" in plan.command.shell_line()
    outcome = _migrate(env)
    assert outcome.status == "migrated"
    owner = pg18.execute(
        "SELECT tableowner FROM pg_tables WHERE tablename = 'users'", "mig_owner_db"
    )
    assert owner == [("mig_owner",)]
