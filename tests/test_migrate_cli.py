"""``pgwarden migrate check`` and ``pgwarden migrate upgrade``: output, JSON and exit codes.

The commands run in-process through :func:`pgwarden.cli.main` against a config file, a real
Alembic project and the PostgreSQL 18 fixture.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pgwarden.cli import main
from tests.helpers import write_config
from tests.pgservers import PgServer
from tests.test_migrate_support import ALEMBIC, AlembicApp, users_app


def _toml(
    workdir: Path, pg18: PgServer, targets: list[tuple[str, AlembicApp | None]], extra: str = ""
) -> Path:
    parts = [
        f'[daemon]\nstate_dir = "{workdir / "state"}"\nsocket = "{workdir / "ctl.sock"}"\n',
        f'[storage]\npath = "{workdir / "backups"}"\n',
    ]
    for db, app in targets:
        pg18.create_database(db)
        parts.append(
            f'[[targets]]\nname = "{db}"\ndsn = "{pg18.uri(db)}"\nbin_dir = "{pg18.bin_dir}"\n'
            f"{extra}\n[targets.backup]\nretries = 0\n"
        )
        if app is not None:
            parts.append(f'[targets.migrations]\nproject = "{app.root}"\nalembic = "{ALEMBIC}"\n')
    return write_config(workdir, "\n".join(parts))


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out, _ = capsys.readouterr()
    return code, out


def test_check_every_target_reports_each_and_fails_on_an_error(
    pg18: PgServer, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good, bad = users_app(workdir / "good"), users_app(workdir / "bad")
    config = _toml(workdir, pg18, [("cli_good", good), ("cli_bad", bad), ("cli_none", None)])
    code, out = _run(capsys, "migrate", "upgrade", "-c", str(config), "cli_bad")
    assert code == 0, out
    assert "cli_bad: migrated (none) ->" in out
    assert "pre-migration backup" in out

    code, out = _run(capsys, "migrate", "check", "-c", str(config))
    assert code == 0, out
    assert "cli_good: 2 migration file(s)" in out
    assert "2 pending" in out
    assert "cli_none" not in out  # no [targets.migrations]: not checked

    released = bad.versions / "001_initial_schema.py"
    released.write_text(released.read_text() + "\n# tidied up\n")
    code, out = _run(capsys, "migrate", "check", "-c", str(config))
    assert code == 1
    assert "ERROR   released_edited: released migration 001_initial_schema.py changed" in out
    code, out = _run(capsys, "migrate", "check", "-c", str(config), "--json")
    assert code == 1
    reports = {r["target"]: r for r in json.loads(out)}
    assert reports["cli_good"]["ok"] is True
    assert reports["cli_bad"]["ok"] is False
    assert reports["cli_bad"]["problems"][0]["code"] == "released_edited"
    assert reports["cli_bad"]["released"] == 2


def test_upgrade_dry_run_then_upgrade_then_up_to_date(
    pg18: PgServer,
    workdir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLI_MIGRATE_PW", "never-printed-pw")
    app = users_app(workdir / "app")
    config = _toml(workdir, pg18, [("cli_up", app)], extra='password_env = "CLI_MIGRATE_PW"')
    code, out = _run(capsys, "migrate", "upgrade", "-c", str(config), "cli_up", "--dry-run")
    assert code == 0, out
    assert "plan for cli_up (dry run" in out
    assert f"would apply: {app.revisions[0]}, {app.revisions[1]}" in out
    assert "backup: pg_dump of database cli_up (custom format)" in out
    assert f"DATABASE_URL='postgresql://postgres:***@127.0.0.1:{pg18.port}/cli_up'" in out
    assert f"{ALEMBIC} -c {app.root / 'alembic.ini'} upgrade head" in out
    assert "never-printed-pw" not in out
    assert pg18.execute("SELECT to_regclass('alembic_version')", "cli_up") == [(None,)]

    code, out = _run(capsys, "migrate", "upgrade", "-c", str(config), "cli_up", "--json")
    assert code == 0, out
    result = json.loads(out)
    assert result["status"] == "migrated"
    assert result["revision_after"] == [app.revisions[1]]
    assert result["backup_id"]
    assert "never-printed-pw" not in out

    code, out = _run(capsys, "migrate", "upgrade", "-c", str(config), "cli_up")
    assert code == 0
    assert "up to date" in out and "no backup taken" in out


def test_upgrade_refused_and_failed_exit_1(
    pg18: PgServer, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = users_app(workdir / "app")
    app.add("003_broken.py", "ALTER TABLE no_such_table ADD COLUMN x int")
    config = _toml(workdir, pg18, [("cli_fail", app)])
    code, out = _run(capsys, "migrate", "upgrade", "-c", str(config), "cli_fail")
    assert code == 1
    assert "cli_fail: migration FAILED: alembic upgrade head exited with status 1" in out
    assert 'relation "no_such_table" does not exist' in out
    assert "pre-migration backup" in out

    (app.versions / "003_broken.py").rename(app.versions / "3_broken.py")
    code, out = _run(capsys, "migrate", "upgrade", "-c", str(config), "cli_fail", "--dry-run")
    assert code == 1
    assert "3_broken.py is not named NNN_name.py" in out
    assert "the guard would refuse this upgrade" in out
    code, out = _run(capsys, "migrate", "upgrade", "-c", str(config), "cli_fail", "--json")
    assert code == 1
    result = json.loads(out)
    assert result["status"] == "refused"
    assert result["guard"]["problems"][0]["code"] == "numbering"


def test_usage_and_configuration_errors_exit_2(
    pg18: PgServer, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = users_app(workdir / "app")
    config = _toml(workdir, pg18, [("cli_cfg", app), ("cli_plain", None)])
    assert main(["migrate", "check", "-c", str(config), "cli_plain"]) == 2
    assert "cli_plain" in capsys.readouterr().err
    assert main(["migrate", "upgrade", "-c", str(config), "nope"]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["migrate", "downgrade", "-c", str(config), "cli_cfg"])  # there is no downgrade
    assert exc.value.code == 2
    capsys.readouterr()

    text = config.read_text().replace(str(ALEMBIC), "/nonexistent/alembic")
    config.write_text(text)
    assert main(["migrate", "upgrade", "-c", str(config), "cli_cfg", "--dry-run"]) == 2
    assert "targets[0].migrations.alembic: /nonexistent/alembic is not an executable" in (
        capsys.readouterr().err
    )
