"""PostgreSQL access: credentials, connection specs, engines, server facts, client binaries.

The submodules, each owning one concern:

* :mod:`~pgwarden.pg.credentials` -- a password from env, file, systemd credential or config;
* :mod:`~pgwarden.pg.conninfo` -- :class:`ConnSpec`: conninfo + password, psycopg connections,
  the environment (private pgpass file) for libpq command-line tools;
* :mod:`~pgwarden.pg.engine` -- SQLAlchemy engines with pgwarden's pool settings;
* :mod:`~pgwarden.pg.server` -- the server's version;
* :mod:`~pgwarden.pg.binaries` -- finding pg_dump/pg_restore/psql of a usable major version;
* :mod:`~pgwarden.pg.process` -- the one place that runs external tools.
"""
