"""PostgreSQL access: credentials, connection specs, engines, server facts, client binaries.

The submodules, each owning one concern:

* :mod:`~pgwarden.pg.credentials` -- a password from env, file, systemd credential or config;
* :mod:`~pgwarden.pg.conninfo` -- :class:`ConnSpec`: conninfo + password, psycopg connections,
  the environment (private pgpass file) for libpq command-line tools;
* :mod:`~pgwarden.pg.environment` -- the allow-listed environment every child process starts
  from (the daemon's own is never inherited);
* :mod:`~pgwarden.pg.engine` -- SQLAlchemy engines with pgwarden's pool settings;
* :mod:`~pgwarden.pg.server` -- the server's version;
* :mod:`~pgwarden.pg.binaries` -- finding pg_dump/pg_restore/psql of a usable major version;
* :mod:`~pgwarden.pg.process` -- the one place that runs external tools (its result types in
  :mod:`~pgwarden.pg.tooltypes`, the stderr scrubber in :mod:`~pgwarden.redaction`).

The names most callers need are re-exported here.
"""

from pgwarden.pg.binaries import Tool, find_tool
from pgwarden.pg.conninfo import ConnSpec, tool_environment
from pgwarden.pg.credentials import resolve_password
from pgwarden.pg.engine import PoolStats, make_engine, pool_stats
from pgwarden.pg.process import (
    RunningTool,
    ToolResult,
    check,
    redact,
    run_pipeline,
    run_tool,
    start_tool,
)
from pgwarden.pg.server import server_major, server_version

__all__ = [
    "ConnSpec",
    "PoolStats",
    "RunningTool",
    "Tool",
    "ToolResult",
    "check",
    "find_tool",
    "make_engine",
    "pool_stats",
    "redact",
    "resolve_password",
    "run_pipeline",
    "run_tool",
    "server_major",
    "server_version",
    "start_tool",
    "tool_environment",
]
