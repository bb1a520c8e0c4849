"""The databases a whole-server target covers, asked of the server at each run.

``pg_database`` minus templates (``datistemplate``) and databases that refuse connections
(``datallowconn = false``: pg_dump could not connect either), then the target's selection
(:func:`pgwarden.config.serverwide.select_databases`).  A database whose name cannot be a
directory under ``<storage>/<target>/`` (the target-name rule) is not silently dropped: it is
listed in :attr:`Discovery.unnamable` so the run can report it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from pgwarden.config import TargetConfig
from pgwarden.config.names import target_name_problem
from pgwarden.config.serverwide import select_databases

DATABASES_SQL = """
SELECT datname FROM pg_database
WHERE NOT datistemplate AND datallowconn
ORDER BY datname
"""


@dataclass(frozen=True)
class Discovery:
    """One run's answer: the databases to back up, the excluded ones, the unnamable ones."""

    databases: tuple[str, ...]
    excluded: tuple[str, ...]
    unnamable: tuple[str, ...]


def list_databases(conn: psycopg.Connection[Any]) -> tuple[str, ...]:
    """The server's databases that are not templates and accept connections, sorted."""
    return tuple(str(row[0]) for row in conn.execute(DATABASES_SQL).fetchall())


def discover(conn: psycopg.Connection[Any], target: TargetConfig) -> Discovery:
    """Apply ``target``'s ``databases``/``exclude_databases`` to what the server has now."""
    found = list_databases(conn)
    chosen = select_databases(found, target.databases, target.exclude_databases)
    unnamable = tuple(d for d in chosen if target_name_problem(d) is not None)
    excluded = tuple(d for d in found if d in target.exclude_databases)
    return Discovery(
        databases=tuple(d for d in chosen if d not in unnamable),
        excluded=excluded,
        unnamable=unnamable,
    )
