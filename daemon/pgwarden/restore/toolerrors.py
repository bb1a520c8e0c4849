"""What restore tools say on stderr: every line kept (:class:`StderrLines`), and the error
lines split into real errors and the known harmless ones (:func:`classify`).

Two kinds are not failures, each written down in the result: PostgreSQL 17+
``pg_restore``/``pg_dump`` start every session with ``SET transaction_timeout = 0``, which
servers before 17 reject; and, in a drill of a plain dump, ``role ... does not exist`` (a plain
dump cannot be restored without its owners, a drill does not need them).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any

from pgwarden.logsetup import get_logger

log = get_logger("pgwarden.restore")

MAX_ERROR_LINES = 200
#: the error lines of a drill's own data loader (:mod:`pgwarden.restore.copyload`)
LOADER_ERROR_PREFIX = "pgwarden: error: "
_ERROR_PREFIXES = ("pg_restore: error:", LOADER_ERROR_PREFIX)
_TRANSACTION_TIMEOUT = 'unrecognized configuration parameter "transaction_timeout"'
_MISSING_ROLE = re.compile(r'role "[^"]*" does not exist')
_PSQL_ERROR = re.compile(r"\b(ERROR|FATAL|PANIC):")


class StderrLines:
    """A tool logger that keeps every stderr line (up to a limit) and forwards it."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.dropped = 0
        self._lock = threading.Lock()

    def _keep(self, kw: dict[str, Any]) -> None:
        line = kw.get("line")
        if isinstance(line, str):
            with self._lock:
                if len(self.lines) < MAX_ERROR_LINES * 4:
                    self.lines.append(line)
                else:
                    self.dropped += 1

    def add(self, line: str) -> None:
        """A line of pgwarden's own (the data loader's errors), kept and logged."""
        self.warning("restore error", line=line)

    def info(self, event: str, /, *args: Any, **kw: Any) -> Any:
        self._keep(kw)
        return log.info(event, *args, **kw)

    def warning(self, event: str, /, *args: Any, **kw: Any) -> Any:
        self._keep(kw)
        return log.warning(event, *args, **kw)


@dataclass(frozen=True)
class Errors:
    errors: list[str]
    ignored: list[str]
    notes: list[str]


def classify(lines: list[str], *, plain: bool, server_major: int, drill: bool) -> Errors:
    """Split the error lines of a restore into real errors and the known harmless ones."""
    errors: list[str] = []
    ignored: list[str] = []
    notes: set[str] = set()
    for line in lines:
        is_error = bool(_PSQL_ERROR.search(line)) if plain else line.startswith(_ERROR_PREFIXES)
        if not is_error:
            continue
        if server_major < 17 and _TRANSACTION_TIMEOUT in line:
            ignored.append(line)
            notes.add(
                f"SET transaction_timeout (PostgreSQL 17+ tools) is unknown to PostgreSQL "
                f"{server_major}: ignored"
            )
        elif plain and drill and _MISSING_ROLE.search(line):
            ignored.append(line)
            notes.add("owners missing on the verification server: ignored in a drill")
        else:
            errors.append(line)
    return Errors(errors, ignored, sorted(notes))
