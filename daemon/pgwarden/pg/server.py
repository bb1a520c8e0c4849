"""Facts about a connected PostgreSQL server that other parts decide on (its version).

Read from the connection's startup parameters (``server_version_num`` as libpq reports it), so
no query is sent.
"""

from __future__ import annotations

from typing import Any

import psycopg

__all__ = ["format_version_num", "server_major", "server_version", "server_version_num"]


def server_version_num(conn: psycopg.Connection[Any]) -> int:
    """``server_version_num``: 180006 for 18.6, 150018 for 15.18, 90624 for 9.6.24."""
    return int(conn.info.server_version)


def server_major(conn: psycopg.Connection[Any]) -> int:
    """The major version: 18, 15 (9 for 9.x, which pgwarden does not support anyway)."""
    return server_version_num(conn) // 10000


def server_version(conn: psycopg.Connection[Any]) -> str:
    """The version as people write it: ``"18.6"``, ``"15.18"``, ``"9.6.24"``."""
    return format_version_num(server_version_num(conn))


def format_version_num(num: int) -> str:
    """``180006`` -> ``"18.6"``; before PostgreSQL 10, three parts: ``90624`` -> ``"9.6.24"``."""
    if num >= 100000:
        return f"{num // 10000}.{num % 10000}"
    return f"{num // 10000}.{num // 100 % 100}.{num % 100}"
