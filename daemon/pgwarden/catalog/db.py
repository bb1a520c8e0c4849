"""Opening the catalog: one SQLAlchemy engine per process, migrated to this build's schema.

``open_catalog(url)`` accepts the URL from ``daemon.catalog_url`` (default
``sqlite:///<state_dir>/catalog.db``).  SQLite and PostgreSQL are supported;
``postgresql://`` URLs use psycopg 3.  On open the schema is brought to head by the numbered
migrations (:mod:`pgwarden.catalog.migrator`); a catalog written by a newer pgwarden is refused.

SQLite is used from several threads through one engine with a connection pool: WAL journal
(readers never block the writer), ``busy_timeout`` (writers wait for each other instead of
failing), foreign keys on, ``synchronous=NORMAL`` (durable at checkpoints, safe in WAL mode).
pysqlite's own transaction handling is turned off and SQLAlchemy emits ``BEGIN`` itself:
``BEGIN IMMEDIATE`` for writing sessions, so that two writers queue on the lock at the start
instead of one failing when it upgrades a read lock.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.pool import ConnectionPoolEntry

from pgwarden.catalog import migrator
from pgwarden.catalog.queries import WRITE_OPTION, Catalog
from pgwarden.config import PoolSettings
from pgwarden.errors import CatalogError, describe

#: how long a SQLite writer waits for another one before failing
SQLITE_BUSY_TIMEOUT_S = 30.0
#: a small pool: the catalog sees a few short transactions per job
DEFAULT_POOL = PoolSettings(pool_size=2, max_overflow=4, pool_timeout=30.0, pool_recycle=1800)
PG_CONNECT_TIMEOUT_S = 10


def describe_url(url: URL) -> str:
    """The URL for messages and logs, password hidden."""
    return url.render_as_string(hide_password=True)


def parse_url(url: str) -> URL:
    """Parse and normalise a catalog URL: ``postgresql://``/``postgres://`` use psycopg 3."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise CatalogError(f"invalid catalog URL: {exc}") from exc
    backend = parsed.get_backend_name()
    if parsed.drivername in {"postgres", "postgresql", "postgresql+psycopg2"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif backend not in {"sqlite", "postgresql"}:
        raise CatalogError(
            f"catalog URL {describe_url(parsed)}: only sqlite:/// and postgresql:// are supported"
        )
    if backend == "sqlite" and parsed.database in {None, "", ":memory:"}:
        raise CatalogError("the catalog must be a SQLite file (sqlite:////path/catalog.db)")
    return parsed


def _sqlite_engine(url: URL) -> Engine:
    database = Path(str(url.database))
    if not database.parent.exists():
        try:
            database.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise CatalogError(
                f"cannot create the catalog directory {database.parent}: {exc}"
            ) from exc
    _create_private(database)
    engine = create_engine(
        url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        assert isinstance(dbapi_connection, sqlite3.Connection)
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN (see _on_begin)
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
            _switch_to_wal(cursor)
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        immediate = connection.get_execution_options().get(WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _switch_to_wal(cursor: sqlite3.Cursor) -> None:
    """``PRAGMA journal_mode=WAL``, retried: switching modes can answer "database is locked"
    at once, without waiting for the busy timeout, while another connection opens the file."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
        else:
            return


def _postgresql_engine(url: URL, pool: PoolSettings) -> Engine:
    return create_engine(
        url,
        pool_size=pool.pool_size,
        max_overflow=pool.max_overflow,
        pool_timeout=pool.pool_timeout,
        pool_recycle=pool.pool_recycle,
        pool_pre_ping=True,
        connect_args={
            "application_name": "pgwarden-catalog",
            "connect_timeout": PG_CONNECT_TIMEOUT_S,
        },
    )


def create_catalog_engine(url: str, pool: PoolSettings | None = None) -> Engine:
    """The engine for a catalog URL, configured as described in the module docstring."""
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed)
    return _postgresql_engine(parsed, pool or DEFAULT_POOL)


def sqlite_at_head(url: str) -> bool | None:
    """For a SQLite catalog: whether it exists at this build's head revision (plain SQL, no
    Alembic); ``None`` for another backend or when that cannot be told (:func:`open_catalog`
    then says why)."""
    try:
        parsed = parse_url(url)
        if parsed.get_backend_name() != "sqlite" or not parsed.database:
            return None
        if not Path(parsed.database).is_file():
            return False
        engine = _sqlite_engine(parsed)
        try:
            with engine.connect() as connection:
                return migrator.at_head(connection)
        finally:
            engine.dispose()
    except (CatalogError, SQLAlchemyError, OSError):
        return None


def open_catalog(url: str, *, pool: PoolSettings | None = None) -> Catalog:
    """Open the catalog at ``url``, migrating it to this build's head revision.

    Raises :class:`CatalogError` if the database cannot be reached or migrated, or if it is at
    a revision this build does not know (written by a newer pgwarden).
    """
    engine = create_catalog_engine(url, pool)
    where = describe_url(engine.url)
    try:
        with engine.execution_options(**{WRITE_OPTION: True}).begin() as connection:
            migrator.upgrade(connection, where)
    except CatalogError:
        engine.dispose()
        raise
    except (SQLAlchemyError, OSError) as exc:
        engine.dispose()
        raise CatalogError(f"cannot open the catalog at {where}: {describe(exc)}") from exc
    return Catalog(engine, where)


def _create_private(database: Path) -> None:
    """Create a missing catalog file 0600 whatever the umask (SQLite would make it 0644, and
    its ``-wal`` and ``-shm`` files take the database file's mode); an existing one is left."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(database, flags, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise CatalogError(f"cannot create the catalog {database}: {exc.strerror}") from exc
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
