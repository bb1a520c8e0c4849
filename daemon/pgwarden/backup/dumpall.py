"""``pg_dumpall --globals-only``: the roles and tablespaces a database dump refers to.

A database dump cannot recreate them; with ``dump_globals = true`` their SQL goes into the
manifest (``globals_sql``).  Role passwords are never included (``--no-role-passwords``).
"""

from __future__ import annotations

import threading

from pgwarden.errors import BackupError
from pgwarden.logsetup import get_logger
from pgwarden.pg import process
from pgwarden.pg.binaries import Tool, find_tool
from pgwarden.pg.conninfo import ConnSpec, tool_environment

log = get_logger("pgwarden.backup")

GLOBALS_LIMIT = 16 << 20


def dump_globals(spec: ConnSpec, dump_tool: Tool, cancel: threading.Event | None) -> str:
    """``pg_dumpall --globals-only --no-role-passwords`` from ``dump_tool``'s installation."""
    tool = find_tool("pg_dumpall", min_major=dump_tool.major, bin_dir=dump_tool.path.parent)
    out = bytearray()

    def sink(chunk: bytes) -> None:
        out.extend(chunk)
        if len(out) > GLOBALS_LIMIT:
            raise BackupError("pg_dumpall --globals-only printed more than 16 MiB")

    argv = [
        str(tool.path),
        "--globals-only",
        "--no-role-passwords",
        "--no-password",
        f"--dbname={spec.tool_conninfo()}",
    ]
    with tool_environment(spec) as env:
        result = process.run_tool(
            argv, env=env, stdout=sink, name="pg_dumpall", log=log, cancel=cancel
        )
    process.check(result)
    return out.decode("utf-8", "replace")
