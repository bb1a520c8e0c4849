"""The forward-only guard's pure parts: reading migration files, locating them, the rules.

No database here: :func:`pgwarden.migrate.guard.evaluate` takes the files, the ledger and the
database's revisions as values, so each policy rule is tested directly and by property
(hypothesis) over generated chains of migrations.
"""

from __future__ import annotations

import os
import stat
import subprocess
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import make_url

from pgwarden.config import Secret
from pgwarden.errors import BusyError, ConfigError, UsageError
from pgwarden.migrate.database import database_url, display_url
from pgwarden.migrate.guard import evaluate, numbering
from pgwarden.migrate.ledger import Ledger, LedgerEntry, LedgerError, LedgerStore, UpgradeRecord
from pgwarden.migrate.project import locate, versions_from_ini
from pgwarden.migrate.run import child_environment, last_error_line
from pgwarden.migrate.scripts import MigrationFile, parse_source, scan
from pgwarden.pg.conninfo import ConnSpec
from tests.helpers import make_config
from tests.test_migrate_support import ALEMBIC, users_app

T0 = datetime(2026, 1, 1, tzinfo=UTC)


# -- reading migration files --------------------------------------------------------------------


def test_parse_plain_and_annotated_assignments() -> None:
    plain = parse_source("revision = 'abc'\ndown_revision = None\n")
    assert (plain.revision, plain.down_revisions, plain.error) == ("abc", (), None)
    annotated = parse_source(
        textwrap.dedent("""
        from typing import Sequence, Union
        revision: str = "def"
        down_revision: Union[str, Sequence[str], None] = ("abc", "xyz")
    """)
    )
    assert annotated.revision == "def"
    assert annotated.down_revisions == ("abc", "xyz")


@pytest.mark.parametrize(
    ("body", "works"),
    [
        ("pass", False),
        ('"""Nothing to undo: forward-only."""', False),
        ("...", False),
        ('raise RuntimeError("forward-only: write a new migration")', False),
        ('"""doc"""\n    pass', False),
        ('op.drop_table("users")', True),
        ("if True:\n        pass", True),
    ],
)
def test_downgrade_that_does_work_is_told_apart(body: str, works: bool) -> None:
    source = f"revision = 'a'\ndown_revision = None\n\ndef downgrade() -> None:\n    {body}\n"
    assert parse_source(source).downgrade_work is works


def test_unparsable_files_are_reported_not_raised() -> None:
    assert "not valid Python" in (parse_source("revision = 'a'\ndef (:\n").error or "")
    assert "assigns no revision" in (parse_source("x = 1\n").error or "")
    computed = parse_source("import uuid\nrevision = uuid.uuid4().hex\n")
    assert computed.revision is None
    assert "not a literal" in (computed.error or "")
    assert "non-empty string" in (parse_source("revision = 3\n").error or "")
    assert "down_revision must be" in (
        parse_source("revision = 'a'\ndown_revision = 5\n").error or ""
    )
    assert parse_source(b"revision = 'a'\x00").error is not None


def test_a_file_made_by_the_real_alembic_revision_command_parses(tmp_path: Path) -> None:
    def run(*a: str) -> None:
        subprocess.run([str(ALEMBIC), *a], cwd=tmp_path, check=True, capture_output=True)

    run("init", "migrations")
    run("revision", "-m", "initial schema", "--rev-id", "001")
    run("revision", "-m", "add users table", "--rev-id", "002")
    files = scan([tmp_path / "migrations" / "versions"])
    assert [(f.revision, f.down_revisions, f.error) for f in files] == [
        ("001", (), None),
        ("002", ("001",), None),
    ]
    assert not any(f.downgrade_work for f in files)  # the template's downgrade() is `pass`
    project = locate(_config(tmp_path, {"project": str(tmp_path)}), _target(tmp_path))
    assert project.versions == (tmp_path / "migrations" / "versions",)


def test_scan_skips_init_and_lock_files(tmp_path: Path) -> None:
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / ".#001_x.py").write_text("")
    (tmp_path / "notes.txt").write_text("")
    (tmp_path / "001_x.py").write_text("revision = 'a'\ndown_revision = None\n")
    assert [f.name for f in scan([tmp_path])] == ["001_x.py"]


# -- locating the project ---------------------------------------------------------------------


def _config(workdir: Path, migrations: dict[str, object]):  # type: ignore[no-untyped-def]
    doc = {"name": "app", "dsn": "postgresql://app@localhost/app", "migrations": migrations}
    return make_config(workdir, [doc])


def _target(workdir: Path, migrations: dict[str, object] | None = None):  # type: ignore[no-untyped-def]
    return _config(workdir, migrations or {"project": str(workdir)}).targets[0]


def test_versions_from_the_ini_with_here_and_relative_locations(tmp_path: Path) -> None:
    ini = tmp_path / "conf" / "alembic.ini"
    ini.parent.mkdir()
    ini.write_text("[alembic]\nscript_location = %(here)s/../db\n")
    assert versions_from_ini(ini, tmp_path) == (tmp_path / "db" / "versions",)
    ini.write_text("[alembic]\nscript_location = db\n")
    assert versions_from_ini(ini, tmp_path) == (tmp_path / "db" / "versions",)
    ini.write_text(
        f"[alembic]\nscript_location = db\npath_separator = os\n"
        f"version_locations = %(here)s/a{os.pathsep}b\n"
    )
    assert versions_from_ini(ini, tmp_path) == (ini.parent / "a", tmp_path / "b")
    ini.write_text("[alembic]\nscript_location = db\nversion_locations = x, y z\n")
    assert versions_from_ini(ini, tmp_path) == (tmp_path / "x", tmp_path / "y", tmp_path / "z")


def test_versions_from_pyproject_when_the_ini_has_none(tmp_path: Path) -> None:
    ini = tmp_path / "alembic.ini"
    ini.write_text("[loggers]\nkeys = root\n")
    with pytest.raises(ValueError, match="no script_location"):
        versions_from_ini(ini, tmp_path)
    (tmp_path / "pyproject.toml").write_text('[tool.alembic]\nscript_location = "%(here)s/mig"\n')
    assert versions_from_ini(ini, tmp_path) == (tmp_path / "mig" / "versions",)


def test_a_package_resource_location_asks_for_versions(tmp_path: Path) -> None:
    ini = tmp_path / "alembic.ini"
    ini.write_text("[alembic]\nscript_location = myapp:migrations\n")
    with pytest.raises(ValueError, match=r"set \[targets\.migrations\] versions"):
        versions_from_ini(ini, tmp_path)


def test_locate_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"targets\[0\]\.migrations\.project"):
        locate(_config(tmp_path, {}), _config(tmp_path, {}).targets[0])
    with pytest.raises(
        ConfigError, match=r"targets\[0\]\.migrations\.alembic_ini: .* does not exist"
    ):
        locate(_config(tmp_path, {"project": str(tmp_path)}), _target(tmp_path))
    (tmp_path / "alembic.ini").write_text("[alembic]\nscript_location = nowhere\n")
    with pytest.raises(ConfigError, match=r"versions directory .*nowhere/versions does not exist"):
        locate(_config(tmp_path, {"project": str(tmp_path)}), _target(tmp_path))
    app = users_app(tmp_path / "app")
    config = _config(tmp_path, {"project": str(app.root), "versions": str(app.versions)})
    assert locate(config, config.targets[0]).versions == (app.versions,)


# -- the rules --------------------------------------------------------------------------------


def mf(name: str, rev: str, *down: str, sha: str | None = None, **kw: object) -> MigrationFile:
    return MigrationFile(name, sha or f"sha-{name}", rev, tuple(down), **kw)  # type: ignore[arg-type]


def chain(n: int) -> list[MigrationFile]:
    files = []
    for i in range(1, n + 1):
        files.append(mf(f"{i:03d}_step_{i}.py", f"r{i}", *([f"r{i - 1}"] if i > 1 else [])))
    return files


def entries(files: list[MigrationFile]) -> dict[str, LedgerEntry]:
    return {f.name: LedgerEntry(f.name, f.sha256, f.revision or "", T0) for f in files}


def codes(
    files: list[MigrationFile],
    ledger: dict[str, LedgerEntry] | None = None,
    database: tuple[str, ...] = (),
    numbered: bool = True,
) -> list[str]:
    result = evaluate(files, ledger or {}, database, require_numbered=numbered)
    return sorted(p.code for p in result.problems)


def test_a_clean_chain_has_no_problems_and_plans_in_order() -> None:
    files = chain(4)
    result = evaluate(files, entries(files[:2]), ("r2",), require_numbered=True, now=T0)
    assert result.problems == ()
    assert result.heads == ("r4",)
    assert [(p.revision, p.file) for p in result.pending] == [
        ("r3", "003_step_3.py"),
        ("r4", "004_step_4.py"),
    ]
    assert result.to_record == ()
    fresh = evaluate(files, {}, ("r3",), require_numbered=True, now=T0)
    assert [e.name for e in fresh.to_record] == [f.name for f in files[:3]]


def test_each_policy_error() -> None:
    files = chain(3)
    released = entries(files[:2])
    edited = [files[0], mf(files[1].name, "r2", "r1", sha="changed"), files[2]]
    assert codes(edited, released, ("r2",)) == ["released_edited"]
    assert codes([files[0], files[2]], released, ("r1",)) == [
        "missing_parent",
        "numbering",
        "released_deleted",
    ]
    assert codes(files, {}, ("nope",)) == ["unknown_revision"]
    assert codes(files, {}, ("r1", "r2")) == ["database_heads"]
    branch = [*files, mf("004_other.py", "r4", "r2")]
    assert codes(branch, {}, (), numbered=False) == ["branch"]
    assert codes([*files, mf("004_dup.py", "r3", "r2")], numbered=False) == ["duplicate_revision"]
    cyclic = [mf("001_a.py", "a", "b"), mf("002_b.py", "b", "a")]
    assert "cycle" in codes(cyclic, numbered=False)
    broken = [*files, MigrationFile("004_broken.py", "x", None, error="not valid Python")]
    assert codes(broken) == ["unreadable"]


def test_downgrades_are_warnings_and_a_database_behind_the_ledger_is_noticed() -> None:
    files = chain(3)
    files[2] = mf("003_step_3.py", "r3", "r2", downgrade_work=True)
    result = evaluate(files, entries(files), ("r1",), require_numbered=True)
    assert not result.errors
    assert sorted(p.code for p in result.problems) == ["downgrade_work", "went_back"]
    went_back = next(p for p in result.problems if p.code == "went_back")
    assert "002_step_2.py, 003_step_3.py" in went_back.message
    assert [p.revision for p in result.pending] == ["r2", "r3"]


def test_numbering_rules() -> None:
    assert numbering(chain(3)) == []
    named = [mf("001_a.py", "a"), mf("add_b.py", "b", "a")]
    assert "add_b.py is not named NNN_name.py" in numbering(named)[0].message
    gap = [mf("001_a.py", "a"), mf("003_c.py", "c", "a")]
    assert [p.message for p in numbering(gap)] == [
        "numbering is not contiguous from 001: missing 002"
    ]
    twice = [mf("001_a.py", "a"), mf("002_b.py", "b", "a"), mf("002_c.py", "c", "b")]
    assert "number 002 is used by 2 files" in numbering(twice)[0].message
    swapped = [mf("001_a.py", "a"), mf("002_c.py", "c", "b"), mf("003_b.py", "b", "a")]
    assert any("numbering must follow the revision chain" in p.message for p in numbering(swapped))
    first = [mf("001_a.py", "a", "b"), mf("002_b.py", "b")]
    assert "001_a.py is the first migration but revises b" in numbering(first)[0].message
    assert codes(named, numbered=False) == []


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 12), data=st.data())
def test_property_released_files_are_frozen_unreleased_ones_are_not(
    n: int, data: st.DataObject
) -> None:
    files = chain(n)
    at = data.draw(st.integers(0, n), label="database revision index")
    database = (f"r{at}",) if at else ()
    ledger = entries(files[:at])
    clean = evaluate(files, ledger, database, require_numbered=True)
    assert clean.problems == ()
    assert [p.revision for p in clean.pending] == [f"r{i}" for i in range(at + 1, n + 1)]

    i = data.draw(st.integers(0, n - 1), label="file changed")
    changed = list(files)
    changed[i] = mf(files[i].name, files[i].revision or "", *files[i].down_revisions, sha="new")
    found = codes(changed, ledger, database)
    assert found == (["released_edited"] if i < at else [])

    deleted = files[:i] + files[i + 1 :]
    result = evaluate(deleted, ledger, database, require_numbered=True)
    if i < at:
        gone = [p for p in result.errors if p.code == "released_deleted"]
        assert [p.file for p in gone] == [files[i].name]
    assert not {e.name for e in result.to_record} & set(ledger)


@settings(max_examples=100, deadline=None)
@given(order=st.permutations(list(range(1, 7))))
def test_property_numbering_must_follow_the_chain(order: list[int]) -> None:
    files = chain(6)
    renamed = [
        mf(f"{number:03d}_step.py", f.revision or "", *f.down_revisions)
        for f, number in zip(files, order, strict=True)
    ]
    problems = numbering(renamed)
    assert (problems == []) == (order == sorted(order))


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=20).filter(str.strip))
def test_property_revision_ids_round_trip_through_the_parser(rev: str, down: str) -> None:
    parsed = parse_source(f"revision = {rev!r}\ndown_revision = {down!r}\n")
    if rev.strip():
        assert parsed.revision == rev
        assert parsed.down_revisions == (down,)


# -- the ledger, the URL, the child's environment ----------------------------------------------


def test_ledger_round_trip_never_replaces_and_is_private(tmp_path: Path) -> None:
    store = LedgerStore(tmp_path / "state", "app")
    assert store.load().entries == {}
    first = LedgerEntry("001_a.py", "aa", "a", T0)
    ledger = Ledger("app").with_entries([first])
    ledger = ledger.with_entries([LedgerEntry("001_a.py", "bb", "a", T0)])
    ledger = ledger.with_upgrade(UpgradeRecord(T0, "migrated", (), ("a",), "b" * 32, 1.5))
    store.save(ledger)
    assert store.load() == ledger
    assert store.load().entries["001_a.py"].sha256 == "aa"
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700
    store.path.write_text("{not json")
    with pytest.raises(LedgerError, match="damaged"):
        store.load()


def test_the_ledger_lock_excludes_a_second_holder(tmp_path: Path) -> None:
    store = LedgerStore(tmp_path, "app")
    with store.lock(), pytest.raises(BusyError, match="another pgwarden migrate"):  # noqa: SIM117
        with LedgerStore(tmp_path, "app").lock(timeout=0.2):
            pass
    with store.lock():
        pass


def test_database_url_carries_the_password_encoded_and_display_url_hides_it() -> None:
    secret = "p@ss:w/rd %?&é"
    spec = ConnSpec(
        "host=db.internal port=5433 dbname=my_app user=app sslmode=require", Secret(secret)
    )
    url = database_url(spec)
    assert str(url) == "***" and repr(url) == "Secret('***')"
    parsed = make_url(url.reveal())
    assert (parsed.username, parsed.password, parsed.host, parsed.port, parsed.database) == (
        "app",
        secret,
        "db.internal",
        5433,
        "my_app",
    )
    assert parsed.query == {"sslmode": "require"}
    shown = display_url(spec)
    assert shown == "postgresql://app:***@db.internal:5433/my_app?sslmode=require"
    socket = ConnSpec("host=/run/postgresql port=5432 dbname=app user=app")
    assert database_url(socket).reveal() == (
        "postgresql://app@/app?host=%2Frun%2Fpostgresql&port=5432"
    )
    assert display_url(socket) == database_url(socket).reveal()


def test_the_child_gets_a_small_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGWARDEN_OTHER_PASSWORD", "other-target-secret")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    env = child_environment("DATABASE_URL", Secret("postgresql://u:pw@h/db"))
    assert env["DATABASE_URL"] == "postgresql://u:pw@h/db"
    assert env["LC_ALL"] == "C.UTF-8"
    assert "PGWARDEN_OTHER_PASSWORD" not in env
    assert "DATABASE_URL" not in child_environment(None, None)


def test_the_error_line_of_a_stderr_tail() -> None:
    tail = textwrap.dedent("""\
        INFO  [alembic.runtime.migration] Running upgrade a -> b, add users
        Traceback (most recent call last):
          File "env.py", line 3, in <module>
        psycopg.errors.UndefinedTable: relation "x" does not exist
        The above exception was the direct cause of the following exception:
            raise ex.with_traceback(None)
        sqlalchemy.exc.ProgrammingError: (psycopg.errors.UndefinedTable) relation "x"
        LINE 1: UPDATE x SET y = 1
        [SQL: UPDATE x SET y = 1]
        (Background on this error at: https://sqlalche.me/e/21/f405)
    """)
    assert last_error_line(tail) == (
        'sqlalchemy.exc.ProgrammingError: (psycopg.errors.UndefinedTable) relation "x"'
    )
    assert last_error_line("FAILED: Can't locate revision identified by 'zz'") is not None
    assert last_error_line("KeyError: 'DATABASE_URL'") == "KeyError: 'DATABASE_URL'"
    assert last_error_line("INFO  [alembic] fine\nDETAIL:  nothing") is None
