"""Shared pieces of the migration tests: a real Alembic project written into a test folder.

:class:`AlembicApp` is what an application on the VPS looks like: an ``alembic.ini``
(``script_location = %(here)s/migrations``, logging to stderr as Alembic's template does), an
``env.py`` that reads ``DATABASE_URL`` and connects with SQLAlchemy + psycopg, and numbered
version files ``001_initial_schema.py``, ``002_...`` with hash-like revision ids.  Upgrades run
the real ``alembic`` of this repository's virtualenv against the real PostgreSQL fixtures.
"""

from __future__ import annotations

import hashlib
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.helpers import target_doc
from tests.pgservers import PgServer

REPO = Path(__file__).resolve().parent.parent
ALEMBIC = REPO / ".venv" / "bin" / "alembic"

INI = """\
[alembic]
script_location = %(here)s/migrations

[loggers]
keys = root,sqlalchemy,alembic

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARNING
handlers = console
qualname =

[logger_sqlalchemy]
level = WARNING
handlers =
qualname = sqlalchemy.engine

[logger_alembic]
level = INFO
handlers =
qualname = alembic

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
"""

ENV_PY = '''\
"""The application's env.py: the database comes from $DATABASE_URL, as the strategy's apps do."""
import os
import sys
from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine, make_url, pool

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name)

url = os.environ["DATABASE_URL"]
PROBE = {probe!r}
if PROBE:
    # a careless application: it echoes its URL and its password to stderr
    sys.stderr.write(f"connecting to {{url}}\\n")
    sys.stderr.write(f"password is {{make_url(url).password}}\\n")
    with open(PROBE, "w") as out:
        out.write(make_url(url).password or "")
engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1),
                       poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
'''

VERSION = '''\
"""{slug}

Revision ID: {revision}
Revises: {down}
"""
from alembic import op

revision = {revision!r}
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
{upgrade}


def downgrade() -> None:
{downgrade}
'''


def rev_id(slug: str) -> str:
    """A hash-like revision id, as ``alembic revision`` makes (not the file's number)."""
    return hashlib.sha1(slug.encode()).hexdigest()[:12]


@dataclass
class AlembicApp:
    root: Path
    probe: Path | None = None
    revisions: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        (self.root / "migrations" / "versions").mkdir(parents=True)
        (self.root / "alembic.ini").write_text(INI)
        probe = str(self.probe) if self.probe else ""
        (self.root / "migrations" / "env.py").write_text(ENV_PY.format(probe=probe))

    @property
    def versions(self) -> Path:
        return self.root / "migrations" / "versions"

    def add(self, name: str, *sql: str, downgrade: str = "pass", down: Any = "previous") -> Path:
        """Write ``versions/<name>`` revising the last added one; returns its path."""
        slug = name.removesuffix(".py")
        revision = rev_id(slug)
        if down == "previous":
            down = self.revisions[-1] if self.revisions else None
        body = "\n".join(f"    op.execute({s!r})" for s in sql) or "    pass"
        text = VERSION.format(
            slug=slug,
            revision=revision,
            down=down,
            upgrade=body,
            downgrade=textwrap.indent(downgrade, "    "),
        )
        path = self.versions / name
        path.write_text(text)
        self.revisions.append(revision)
        return path

    def migrations(self, **extra: Any) -> dict[str, Any]:
        """The ``[targets.migrations]`` table for this project."""
        return {"project": str(self.root), "alembic": str(ALEMBIC), **extra}


def migrate_target(server: PgServer, db: str, app: AlembicApp, **extra: Any) -> dict[str, Any]:
    """A target document whose migrations are ``app``; backups without retries."""
    doc = target_doc(server, db, backup={"retries": 0}, migrations=app.migrations())
    doc.update(extra)
    return doc


def users_app(root: Path, probe: Path | None = None) -> AlembicApp:
    """The strategy's own example: ``001_initial_schema.py``, ``002_add_users_table.py``."""
    app = AlembicApp(root, probe=probe)
    app.add("001_initial_schema.py", "CREATE TABLE settings (key text PRIMARY KEY, value text)")
    app.add(
        "002_add_users_table.py",
        "CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL)",
        "INSERT INTO users (name) VALUES ('ada'), ('grace'), ('linus')",
    )
    return app


def test_the_app_builder_writes_a_linear_numbered_chain(tmp_path: Path) -> None:
    from pgwarden.migrate.scripts import scan

    app = users_app(tmp_path / "app")
    files = scan([app.versions])
    assert [f.name for f in files] == ["001_initial_schema.py", "002_add_users_table.py"]
    assert files[0].down_revisions == ()
    assert files[1].down_revisions == (files[0].revision,)
    assert all(f.error is None for f in files)
