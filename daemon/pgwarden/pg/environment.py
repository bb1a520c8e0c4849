"""The environment of every child process pgwarden starts: allow-listed, never inherited whole.

The daemon's environment holds every target's ``password_env`` variable (and whatever systemd
or a shell put there), so no child gets it wholesale: :func:`pgwarden.pg.process.start_tool`
requires an explicit ``env``, built from :func:`base_environment`:

* always: ``PATH`` (:data:`DEFAULT_PATH` when the daemon has none), ``HOME``, ``USER``,
  ``LOGNAME``, the locale (``LANG``, ``LANGUAGE``, ``LC_*``), ``TZ`` and ``TMPDIR``;
* with ``libpq=True``, for a tool that connects: libpq's own variables (:data:`LIBPQ_ENV`'s
  and :data:`LIBPQ_ENV_ONLY`), so that the daemon and its tools read the same defaults --
  ``PGPASSWORD`` is not one of them.  ``ConnSpec.tool_env`` adds the connection's parameters
  and its private pgpass file on top.

:func:`local_tool_environment` is what a PostgreSQL tool that connects nowhere gets
(``pg_restore --list``, ``pg_restore --file=/dev/null``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

#: conninfo keyword -> libpq environment variable (PostgreSQL 18 docs, "Environment Variables")
LIBPQ_ENV: Mapping[str, str] = {
    "host": "PGHOST",
    "hostaddr": "PGHOSTADDR",
    "port": "PGPORT",
    "dbname": "PGDATABASE",
    "user": "PGUSER",
    "passfile": "PGPASSFILE",
    "require_auth": "PGREQUIREAUTH",
    "channel_binding": "PGCHANNELBINDING",
    "service": "PGSERVICE",
    "servicefile": "PGSERVICEFILE",
    "options": "PGOPTIONS",
    "application_name": "PGAPPNAME",
    "sslmode": "PGSSLMODE",
    "requiressl": "PGREQUIRESSL",
    "sslnegotiation": "PGSSLNEGOTIATION",
    "sslcompression": "PGSSLCOMPRESSION",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslcertmode": "PGSSLCERTMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcrl": "PGSSLCRL",
    "sslcrldir": "PGSSLCRLDIR",
    "sslsni": "PGSSLSNI",
    "requirepeer": "PGREQUIREPEER",
    "ssl_min_protocol_version": "PGSSLMINPROTOCOLVERSION",
    "ssl_max_protocol_version": "PGSSLMAXPROTOCOLVERSION",
    "min_protocol_version": "PGMINPROTOCOLVERSION",
    "max_protocol_version": "PGMAXPROTOCOLVERSION",
    "gssencmode": "PGGSSENCMODE",
    "krbsrvname": "PGKRBSRVNAME",
    "gsslib": "PGGSSLIB",
    "gssdelegation": "PGGSSDELEGATION",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "client_encoding": "PGCLIENTENCODING",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "load_balance_hosts": "PGLOADBALANCEHOSTS",
}
#: libpq variables without a conninfo keyword; inherited like the ones above
LIBPQ_ENV_ONLY = frozenset({"PGDATESTYLE", "PGTZ", "PGGEQO", "PGSYSCONFDIR", "PGLOCALEDIR"})
#: what every child inherits (and every ``LC_*``)
INHERITED = frozenset({"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR"})
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"

_LIBPQ_VARS = frozenset(LIBPQ_ENV.values()) | LIBPQ_ENV_ONLY

__all__ = [
    "DEFAULT_PATH",
    "INHERITED",
    "LIBPQ_ENV",
    "LIBPQ_ENV_ONLY",
    "base_environment",
    "local_tool_environment",
]


def base_environment(
    *, libpq: bool = False, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The allow-listed part of ``environ`` (the daemon's ``os.environ`` by default) that a
    child starts from; see the module docstring.  A new dict: add to it freely."""
    source = os.environ if environ is None else environ
    env = {
        k: v
        for k, v in source.items()
        if k in INHERITED or k.startswith("LC_") or (libpq and k in _LIBPQ_VARS)
    }
    env.setdefault("PATH", DEFAULT_PATH)
    return env


def local_tool_environment() -> dict[str, str]:
    """For a PostgreSQL tool that reads a file and connects nowhere (``pg_restore --list``,
    ``pg_restore --file=/dev/null``): :func:`base_environment`, no colours."""
    env = base_environment()
    env["PG_COLOR"] = "never"
    return env
