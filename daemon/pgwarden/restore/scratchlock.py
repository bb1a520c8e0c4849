"""Who owns a scratch database: a PostgreSQL session-level advisory lock.

Before ``CREATE DATABASE`` a drill takes ``pg_try_advisory_lock(LOCK_SPACE, lock_key(name))``
on its connection to the verification server and holds it until the database is dropped; the
server releases it when that session ends, however it ends (``SIGKILL``, power loss of another
host sharing the server, a lost network).  So "the database exists and nobody holds its lock"
proves that its drill is gone, and there is no moment when the database exists without its
marker: the lock comes first.  Alternatives rejected: ``CREATE DATABASE`` cannot run in a
transaction block, so a comment or an owner row can never be written atomically with it; a
marker in the name (63 bytes) would need a reversible owner token, and host + pid + start time
still cannot tell a live process on another host from a dead one.

Advisory locks are per database, and two targets' drills may connect to different databases
of one server: a sweep takes the lock in its own database (:func:`try_lock`, so a drill there
cannot be mid-way) and also looks for a holder in any database (:func:`held_elsewhere`).  The
two-key form never conflicts with an application's single-key ``bigint`` advisory locks.
"""

from __future__ import annotations

import hashlib
from typing import Any

import psycopg

#: first key of the scratch databases' advisory locks ("pgwd"); the second is :func:`lock_key`
LOCK_SPACE = 0x70677764


def lock_key(name: str) -> int:
    """The second key of ``name``'s advisory lock: 31 bits of its SHA-256 (a collision only
    makes a sweep skip a leftover, or a drill pick another name)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big") & 0x7FFFFFFF


def try_lock(conn: psycopg.Connection[Any], name: str) -> bool:
    """Take ``name``'s session-level advisory lock on ``conn`` if nobody holds it there."""
    row = conn.execute(
        "SELECT pg_try_advisory_lock(%s, %s)", (LOCK_SPACE, lock_key(name))
    ).fetchone()
    return bool(row and row[0])


def unlock(conn: psycopg.Connection[Any], name: str) -> None:
    conn.execute("SELECT pg_advisory_unlock(%s, %s)", (LOCK_SPACE, lock_key(name)))


HELD_ELSEWHERE_SQL = """
SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2
  AND classid = %s::oid AND objid = %s::oid AND pid <> pg_backend_pid())
"""


def held_elsewhere(conn: psycopg.Connection[Any], name: str) -> bool:
    """Whether another session holds (or waits for) ``name``'s lock, in any database."""
    row = conn.execute(HELD_ELSEWHERE_SQL, (LOCK_SPACE, lock_key(name))).fetchone()
    return bool(row and row[0])
