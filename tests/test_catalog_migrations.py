"""The catalog's migrations obey the forward-only policy and match the models.

- every released version file is recorded in ``migrations/LEDGER`` and unchanged since;
- numbering is contiguous (``001``, ``002``...), revision ids and ``down_revision`` follow it;
- ``downgrade()`` raises, pointing at writing a new migration;
- the schema the migrations create is exactly what the SQLAlchemy models describe, on SQLite
  and on PostgreSQL.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect

from pgwarden.catalog import head_revision, migrations_dir, migrator, open_catalog
from pgwarden.catalog.migrator import alembic_config
from pgwarden.catalog.models import Base
from tests.pgservers import PgServer

REPO = Path(__file__).resolve().parent.parent
MIGRATIONS = REPO / "migrations"
VERSIONS = MIGRATIONS / "versions"
LEDGER = MIGRATIONS / "LEDGER"
FILE_RE = re.compile(r"^(?P<number>\d{3})_[a-z0-9_]+\.py$")
HOW_TO_ADD = "cd migrations && sha256sum versions/{name} >> LEDGER"


def ledger() -> dict[str, str]:
    entries: dict[str, str] = {}
    for number, line in enumerate(LEDGER.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        match = re.fullmatch(r"([0-9a-f]{64}) [ *](versions/\S+\.py)", line)
        assert match, f"migrations/LEDGER line {number} is malformed: {line!r}"
        assert match[2] not in entries, f"migrations/LEDGER lists {match[2]} twice"
        entries[match[2]] = match[1]
    return entries


def version_files() -> list[Path]:
    return sorted(p for p in VERSIONS.iterdir() if p.suffix == ".py" and p.name != "__init__.py")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_released_migrations_are_unchanged_and_present() -> None:
    for relative, recorded in ledger().items():
        path = MIGRATIONS / relative
        assert path.exists(), (
            f"released migration migrations/{relative} was deleted. Migrations are "
            "forward-only: restore it (git checkout -- migrations/{relative}) and write a new "
            "numbered migration instead"
        )
        assert sha256(path) == recorded, (
            f"released migration migrations/{relative} changed (ledger {recorded[:12]}, file "
            f"{sha256(path)[:12]}). Migrations are forward-only: restore it (git checkout -- "
            f"migrations/{relative}) and put the change in a new numbered migration"
        )


def test_every_migration_is_in_the_ledger() -> None:
    recorded = ledger()
    for path in version_files():
        relative = f"versions/{path.name}"
        assert relative in recorded, (
            f"migrations/{relative} is not in migrations/LEDGER yet; once it is final, record "
            f"it with: {HOW_TO_ADD.format(name=path.name)}"
        )


def test_numbering_is_contiguous_and_matches_revisions() -> None:
    files = version_files()
    assert files, "no migrations at all"
    for index, path in enumerate(files, start=1):
        match = FILE_RE.match(path.name)
        assert match, f"{path.name}: migration files are named NNN_lowercase_slug.py"
        assert int(match["number"]) == index, (
            f"{path.name}: expected number {index:03d}; numbering must be contiguous from 001"
        )
        module = ast.parse(path.read_text())
        values = {
            node.targets[0].id: ast.literal_eval(node.value)
            for node in module.body
            if isinstance(node, ast.Assign)
            and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id in {"revision", "down_revision"}
        }
        assert values.get("revision") == f"{index:03d}", (
            f"{path.name}: revision must be {index:03d}"
        )
        expected_down = None if index == 1 else f"{index - 1:03d}"
        assert values.get("down_revision") == expected_down, (
            f"{path.name}: down_revision must be {expected_down!r}"
        )
    script = ScriptDirectory.from_config(alembic_config())
    assert script.get_heads() == [f"{len(files):03d}"]
    assert head_revision() == f"{len(files):03d}"
    # the fast path that opens an up-to-date catalog without Alembic must know the same head
    assert head_revision() == migrator.HEAD_REVISION


def test_downgrades_raise_and_point_forward() -> None:
    for path in version_files():
        spec = importlib.util.spec_from_file_location(f"_migration_{path.stem}", path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        with pytest.raises(NotImplementedError, match="forward-only") as caught:
            module.downgrade()
        assert "new numbered migration" in str(caught.value)
    template = (MIGRATIONS / "script.py.mako").read_text()
    assert "raise NotImplementedError" in template


def test_migrations_do_not_import_the_live_models() -> None:
    """A migration is frozen in time: it must not change when models.py does."""
    for path in version_files():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith("pgwarden"), path.name
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("pgwarden") for a in node.names), path.name


def test_the_source_checkout_locator_finds_the_migrations() -> None:
    assert migrations_dir() == MIGRATIONS


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request: pytest.FixtureRequest, workdir: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{workdir / 'catalog.db'}"
        return
    server: PgServer = request.getfixturevalue("pg18")
    name = f"pgwarden_mig_{uuid4().hex[:8]}"
    server.create_database(name)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{server.port}/{name}"
    finally:
        server.drop_database(name)


def test_models_match_the_migrated_schema(fresh_url: str) -> None:
    open_catalog(fresh_url).close()
    engine = create_engine(fresh_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
            names = set(inspect(connection).get_table_names())
            assert {"alembic_version", "backups", "verifications"} <= names
    finally:
        engine.dispose()
