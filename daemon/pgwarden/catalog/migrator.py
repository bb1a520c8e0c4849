"""Bringing a catalog database to this build's schema with Alembic, programmatically.

The migrations are the numbered, forward-only files in ``migrations/versions`` (shipped in
the wheel as ``pgwarden/_migrations``).  :func:`upgrade` runs in one transaction on one
connection, under a lock (``BEGIN IMMEDIATE`` on SQLite, an advisory lock on PostgreSQL), so
that the daemon and a one-shot CLI opening the catalog together cannot both migrate it.

A catalog whose revision this build does not know was written by a newer pgwarden: it is
refused rather than touched (:class:`CatalogError`), because downgrades do not exist.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, inspect, text

import pgwarden
from pgwarden.errors import CatalogError

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

#: ``pg_advisory_xact_lock`` key held while migrating a PostgreSQL catalog ("pgwarden" in hex)
ADVISORY_LOCK_KEY = 0x7067776172646E
VERSION_TABLE = "alembic_version"
#: the newest revision in ``migrations/versions`` (a test keeps the two equal): a catalog
#: already there is opened without loading Alembic, which a one-shot command would notice
HEAD_REVISION = "002"


def migrations_dir() -> Path:
    """The Alembic script directory: inside the installed package, else the source checkout."""
    package = Path(pgwarden.__file__).resolve().parent
    for candidate in (package / "_migrations", package.parent.parent / "migrations"):
        if (candidate / "env.py").is_file() and (candidate / "versions").is_dir():
            return candidate
    raise CatalogError(
        f"the catalog migrations are missing: looked in {package / '_migrations'} and "
        f"{package.parent.parent / 'migrations'}; the installation is incomplete"
    )


def alembic_config(connection: Connection | None = None) -> AlembicConfig:
    """An Alembic configuration built in code (no alembic.ini at runtime)."""
    # lazy import: Alembic costs 0.23 s (measured) and a catalog already at head never needs it
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision this build knows, as Alembic computes it."""
    # lazy import: Alembic costs 0.23 s (measured) and a catalog already at head never needs it
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise CatalogError("the catalog migrations have no head revision")
    return head


def current_revisions(connection: Connection) -> tuple[str, ...]:
    """The revisions recorded in the database (empty for a new catalog)."""
    # lazy import: Alembic costs 0.23 s (measured) and a catalog already at head never needs it
    from alembic.runtime.migration import MigrationContext

    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return tuple(context.get_current_heads())


def check_known(connection: Connection, where: str) -> tuple[str, ...]:
    """Refuse a catalog at a revision this build does not know; return its revisions."""
    # lazy import: Alembic costs 0.23 s (measured) and a catalog already at head never needs it
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    known = {rev.revision for rev in script.walk_revisions()}
    revisions = current_revisions(connection)
    for revision in revisions:
        if revision not in known:
            raise CatalogError(
                f"catalog at {where} is at revision {revision!r} which this pgwarden does "
                "not know; it was probably written by a newer version (upgrade pgwarden, or "
                "point daemon.catalog_url elsewhere and run 'pgwarden catalog rebuild')"
            )
    return revisions


def upgrade(connection: Connection, where: str) -> tuple[str, ...]:
    """Lock, check and upgrade the catalog to head on ``connection`` (inside a transaction
    the caller commits).  Returns the revisions found before upgrading."""
    if at_head(connection):
        return (HEAD_REVISION,)
    # lazy import: Alembic costs 0.23 s (measured) and a catalog already at head never needs it
    from alembic import command
    from alembic.util.exc import CommandError

    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
    before = check_known(connection, where)
    try:
        command.upgrade(alembic_config(connection), "head")
    except CommandError as exc:
        raise CatalogError(f"cannot migrate the catalog at {where}: {exc}") from exc
    return before


def at_head(connection: Connection) -> bool:
    """True when the catalog records exactly :data:`HEAD_REVISION` (plain SQL, no Alembic)."""
    if not inspect(connection).has_table(VERSION_TABLE):
        return False
    rows = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).all()
    return [r[0] for r in rows] == [HEAD_REVISION]
