"""Alembic environment of the pgwarden catalog.

At runtime pgwarden calls ``alembic.command.upgrade`` from :mod:`pgwarden.catalog.migrator`
with a ``Config`` built in code and an open connection in ``config.attributes["connection"]``,
already inside the transaction (and the lock) that covers the whole upgrade.  Developers use
``alembic -c migrations/alembic.ini ...`` (see migrations/README.md), where the URL comes from
the ini file or ``-x url=...``.

``render_as_batch`` lets future migrations alter tables on SQLite (copy-and-move).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine, pool

from pgwarden.catalog.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
    )


def run_offline() -> None:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise SystemExit("no database URL: pass -x url=... or set sqlalchemy.url")
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as conn:
        _configure(conn)
        with context.begin_transaction():
            context.run_migrations()
        conn.commit()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
