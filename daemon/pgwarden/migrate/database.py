"""The target's database as the migration guard sees it: its revision, and its URL for Alembic.

* :func:`read_revisions` reads ``alembic_version`` (found through the connection's
  ``search_path``, where Alembic creates it by default): the revisions applied, ``()`` when the
  table does not exist yet.  A project that moved the table (``version_table`` or
  ``version_table_schema`` in its ``env.py``) needs ``search_path``/``options`` in the DSN.
* :func:`database_url` builds the ``postgresql://`` URL handed to the application's ``env.py``
  in ``[targets.migrations] database_url_env``: user, host, port and database from the target's
  DSN, every other conninfo parameter (``sslmode``...) as a query parameter, and the password
  from the target's configured source.  It is returned as a
  :class:`~pgwarden.config.Secret` (``str()`` and ``repr()`` show ``***``) and goes only into the
  child's environment; :func:`display_url` is the same URL with ``***`` for the password.
  A Unix-socket host goes in the query (``?host=/run/postgresql``), which libpq, psycopg and
  SQLAlchemy all accept.
"""

from __future__ import annotations

import getpass
from typing import Any
from urllib.parse import quote, urlencode

import psycopg

from pgwarden.config import Secret
from pgwarden.errors import PgwardenError, describe
from pgwarden.pg.conninfo import ConnSpec

__all__ = ["DatabaseError", "database_url", "display_url", "read_revisions"]

STATEMENT_TIMEOUT_MS = 30_000
_NETLOC_KEYS = ("user", "host", "port", "dbname")


class DatabaseError(PgwardenError):
    """The target's database could not be read (unreachable, permission denied...)."""

    code = "migration_database"


def read_revisions(spec: ConnSpec, target: str) -> tuple[str, ...]:
    """The rows of ``alembic_version``, sorted; ``()`` when the table does not exist."""
    try:
        with spec.connect(application_name="pgwarden-migrate", autocommit=True) as conn:
            conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
            row = conn.execute("SELECT to_regclass('alembic_version') IS NOT NULL").fetchone()
            if not row or not row[0]:
                return ()
            rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    except psycopg.Error as exc:
        # libpq's errors name host, port and user, never the password (the conninfo was
        # validated by ConnSpec, so no parse error quotes it): chained
        raise DatabaseError(
            f"{target}: cannot read alembic_version from {spec.redacted()}: {describe(exc)}"
        ) from exc
    return tuple(sorted(str(r[0]) for r in rows))


def _url(spec: ConnSpec, password: str | None, scheme: str = "postgresql") -> str:
    params: dict[str, Any] = spec.params()
    user = params.pop("user", None)
    host = params.pop("host", None)
    port = params.pop("port", None)
    dbname = params.pop("dbname", None)
    if password is not None:
        params.pop("passfile", None)  # the URL carries the password; a passfile could shadow it
    netloc = ""
    if user:
        netloc = quote(user, safe="")
        if password is not None:
            netloc += ":" + password
        netloc += "@"
    simple_host = host and "," not in host and not host.startswith(("/", "@"))
    if simple_host:
        assert host is not None
        netloc += f"[{host}]" if ":" in host else host
        if port and "," not in port:
            netloc += f":{port}"
        else:
            _put(params, "port", port)
    else:
        _put(params, "host", host)
        _put(params, "port", port)
    path = "/" + quote(dbname, safe="") if dbname else "/"
    query = urlencode(sorted(params.items()), quote_via=quote)
    return f"{scheme}://{netloc}{path}" + (f"?{query}" if query else "")


def _put(params: dict[str, Any], key: str, value: str | None) -> None:
    if value:
        params[key] = value


def database_url(spec: ConnSpec, scheme: str = "postgresql") -> Secret:
    """The target's URL with its password, for the child's environment only."""
    if spec.password is None:
        return Secret(_url(spec, None, scheme))
    return Secret(_url(_with_user(spec), quote(spec.password.reveal(), safe=""), scheme))


def display_url(spec: ConnSpec, scheme: str = "postgresql") -> str:
    """:func:`database_url` with ``***`` in place of the password: safe to print and log."""
    if spec.password is None:
        return _url(spec, None, scheme)
    return _url(_with_user(spec), "***", scheme)


def _with_user(spec: ConnSpec) -> ConnSpec:
    """A URL's user info needs a user name to carry a password; libpq's default is the OS
    user, which is what the DSN means when it names none."""
    if "user" in spec.params():
        return spec
    return spec.with_params(user=getpass.getuser())
