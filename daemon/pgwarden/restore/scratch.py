"""Scratch databases of restore drills, on the verification server.

The verification server is ``[targets.verify] dsn`` (with its own credentials), else the
target's own server.  A drill restores into ``pgwarden_verify_<target>_<stamp>_<random>``
(:func:`scratch_name`; at most 63 bytes, PostgreSQL's identifier limit), created from
``template0``.

Ownership is a session-level advisory lock the drill takes *before* ``CREATE DATABASE`` and
holds until the drop (:mod:`.scratchlock` says why, and why not a comment or the name); the
comment (host, pid, process start time, backend pid) is only a readable record.
:func:`drop_leftovers` (start-up) drops, holding its lock, each ``pgwarden_verify_*`` database
whose lock nobody holds, and leaves alone the others: a drill of this very process, of
another pgwarden process or of another host; legacy databases (no lock) count as dead.

:class:`ScratchDatabase` creates it on a thread (while the drill checks the artifact) and drops
it ``WITH (FORCE)`` at the end of the block, whatever happened in between.

:func:`connection_headroom` reads how many connections the server can still give, so a
parallel restore never takes an application's last connections (:func:`plan_jobs`).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from pgwarden.config import TargetConfig
from pgwarden.errors import describe
from pgwarden.logsetup import get_logger
from pgwarden.pg.conninfo import ConnSpec
from pgwarden.restore.outcome import StepError
from pgwarden.restore.scratchlock import held_elsewhere, try_lock, unlock

#: fresh attempts to drop a scratch database whose first drop failed, and the pause between
DROP_ATTEMPTS = 3
DROP_RETRY_S = 1.0

log = get_logger("pgwarden.verify")

SCRATCH_PREFIX = "pgwarden_verify_"
MARKER = "pgwarden-drill "
MAX_IDENTIFIER = 63
#: connections a drill leaves free for the applications: max(this, 10% of max_connections)
APP_MARGIN_MIN = 2
_TARGET_PART = 24
_PROCESS_STARTED = datetime.now(UTC).isoformat(timespec="seconds")


def verification_spec(target: TargetConfig) -> ConnSpec:
    """How to reach the verification server (a maintenance database on it)."""
    if target.verify.dsn is None:
        spec = ConnSpec.from_target(target)
    else:
        spec = ConnSpec.from_dsn(
            target.verify.dsn, target.verify.credentials, what=f"targets[{target.name}].verify"
        )
    return spec if spec.dbname else spec.with_dbname("postgres")


def scratch_name(target: str, now: datetime | None = None) -> str:
    """``pgwarden_verify_<target>_<YYYYmmddHHMMSS>_<4 hex>``: lowercase, a valid identifier."""
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%d%H%M%S")
    part = re.sub(r"[^a-z0-9_]", "_", target.lower())[:_TARGET_PART] or "target"
    name = f"{SCRATCH_PREFIX}{part}_{stamp}_{secrets.token_hex(2)}"
    assert len(name.encode()) <= MAX_IDENTIFIER
    return name


def connect(spec: ConnSpec, what: str) -> psycopg.Connection[Any]:
    try:
        return spec.connect(application_name="pgwarden-verify", autocommit=True)
    except psycopg.Error as exc:
        # libpq's connection errors never quote the password: chained
        raise StepError(
            "connect", f"cannot connect to {what} {spec.redacted()}: {describe(exc)}"
        ) from exc


def _marker(target: str, backend_pid: int) -> str:
    """The readable record (who holds the lock): never used to decide anything."""
    info = {
        "target": target,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "process_started": _PROCESS_STARTED,
        "backend_pid": backend_pid,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return MARKER + json.dumps(info, sort_keys=True)


def drop_database(conn: psycopg.Connection[Any], name: str) -> None:
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


class ScratchDatabase:
    """A scratch database that exists exactly for the duration of a :meth:`creating` block."""

    def __init__(
        self, spec: ConnSpec, conn: psycopg.Connection[Any], name: str, target: str
    ) -> None:
        self.spec = spec
        self.conn = conn
        self.name = name
        self.target = target
        self.created = False
        self.dropped = False
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @contextmanager
    def creating(self) -> Iterator[ScratchDatabase]:
        """Create it on a thread while the block runs (copying ``template0`` takes 0.1-0.3 s
        of fsyncs); :meth:`wait` before using it or the connection; dropped at the end."""
        self._thread = threading.Thread(
            target=self._create_on_thread, name="drill-createdb", daemon=True
        )
        self._thread.start()
        try:
            yield self
        finally:
            self._join()
            if self.created:
                self._drop_at_end()

    def wait(self) -> None:
        """Until it exists; raises what its creation raised."""
        self._join()
        if self._error is not None:
            raise self._error

    def _join(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _create_on_thread(self) -> None:
        try:
            self._create()
        except BaseException as exc:  # noqa: BLE001 - handed to wait() on the caller's thread
            self._error = exc

    def _create(self) -> None:
        """Lock first (the lock is the marker, see the module), then create, then comment."""
        try:
            self._lock()
            ident = sql.Identifier(self.name)
            try:
                self.conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(ident))
            except psycopg.Error:
                unlock(self.conn, self.name)
                raise
            self.created = True
            marker = _marker(self.target, self.conn.info.backend_pid)
            self.conn.execute(
                sql.SQL("COMMENT ON DATABASE {} IS {}").format(ident, sql.Literal(marker))
            )
        except psycopg.Error as exc:
            if self.created:
                self.drop()
            raise StepError(
                "scratch",
                f"cannot create the scratch database {self.name}: {describe(exc)}",
            ) from exc

    def _lock(self) -> None:
        for _attempt in range(3):
            if try_lock(self.conn, self.name):
                return
            self.name = scratch_name(self.target)  # its lock key is taken: another name
        raise StepError("scratch", f"cannot lock a scratch database name ({self.name})")

    def drop(self) -> None:
        """Drop it (connections to it are terminated); idempotent."""
        if self.dropped:
            return
        drop_database(self.conn, self.name)
        self.dropped = True
        unlock(self.conn, self.name)

    def _drop_at_end(self) -> None:
        try:
            self.drop()
        except psycopg.Error as exc:
            # the caller's connection may have died (server restart): one fresh attempt
            log.warning(
                "dropping the scratch database failed; retrying",
                database=self.name,
                error=describe(exc),
            )
            self._drop_fresh()

    def _drop_fresh(self) -> None:
        """A few attempts on fresh connections: the first may fail for a moment (a server
        restarting, a session of another role still leaving the database)."""
        for attempt in range(1, DROP_ATTEMPTS + 1):
            try:
                with self.spec.connect(application_name="pgwarden-verify", autocommit=True) as conn:
                    drop_database(conn, self.name)
            except psycopg.Error as exc:
                if attempt < DROP_ATTEMPTS:
                    time.sleep(DROP_RETRY_S)
                    continue
                # a traceback adds nothing to the scrubbed message
                log.error(
                    "cannot drop the scratch database; it is dropped at the next start-up",
                    database=self.name,
                    error=describe(exc),
                )
            else:
                self.dropped = True
                return


LEFTOVERS_SQL = """
SELECT d.datname FROM pg_database d
WHERE d.datname LIKE 'pgwarden\\_verify\\_%' AND pg_has_role(current_user, d.datdba, 'MEMBER')
ORDER BY 1
"""
EXISTS_SQL = "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = %s)"


def drop_leftovers(target: TargetConfig) -> list[str]:
    """Drop the scratch databases on ``target``'s verification server whose drill is gone
    (nobody holds their advisory lock, see the module); return their names."""
    spec = verification_spec(target)
    dropped: list[str] = []
    with connect(spec, "the verification server") as conn:
        for (name,) in conn.execute(LEFTOVERS_SQL).fetchall():
            try:
                if _drop_if_orphaned(conn, str(name)):
                    dropped.append(str(name))
            except psycopg.Error as exc:
                log.warning(
                    "cannot drop a leftover scratch database", database=name, error=describe(exc)
                )
    return dropped


def _drop_if_orphaned(conn: psycopg.Connection[Any], name: str) -> bool:
    if not try_lock(conn, name):
        log.info("a restore drill owns this scratch database; left alone", database=name)
        return False
    try:
        if held_elsewhere(conn, name):
            log.info("a restore drill owns this scratch database; left alone", database=name)
            return False
        row = conn.execute(EXISTS_SQL, (name,)).fetchone()
        if not (row and row[0]):
            return False  # its drill dropped it meanwhile
        drop_database(conn, name)
        return True
    finally:
        unlock(conn, name)


# -- connection headroom -------------------------------------------------------------------------

HEADROOM_SQL = """
SELECT current_setting('max_connections')::int,
       current_setting('superuser_reserved_connections')::int
         + coalesce(current_setting('reserved_connections', true), '0')::int,
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),
       r.rolsuper, r.rolconnlimit,
       (SELECT count(*) FROM pg_stat_activity
         WHERE backend_type = 'client backend' AND usename = current_user)
FROM pg_roles r WHERE r.rolname = current_user
"""


@dataclass(frozen=True)
class Headroom:
    max_connections: int
    reserved: int
    in_use: int
    superuser: bool
    role_limit: int
    role_in_use: int

    @property
    def margin(self) -> int:
        """Connections left for the applications, whatever the drill needs."""
        return max(APP_MARGIN_MIN, self.max_connections // 10)

    @property
    def free(self) -> int:
        """Connections this role can still open, beyond the applications' margin."""
        usable = self.max_connections - (0 if self.superuser else self.reserved)
        free = usable - self.in_use - self.margin
        if self.role_limit >= 0 and not self.superuser:
            free = min(free, self.role_limit - self.role_in_use)
        return max(free, 0)


def connection_headroom(conn: psycopg.Connection[Any]) -> Headroom:
    row = conn.execute(HEADROOM_SQL).fetchone()
    assert row is not None
    return Headroom(int(row[0]), int(row[1]), int(row[2]), bool(row[3]), int(row[4]), int(row[5]))


def connections_needed(jobs: int) -> int:
    """Connections ``pg_restore --jobs=N`` opens: N workers and, when N > 1, the leader."""
    return jobs + 1 if jobs > 1 else 1


def plan_jobs(requested: int, headroom: Headroom) -> tuple[int, str]:
    """The parallelism that fits the server's free connections, and a sentence saying why.

    Raises :class:`StepError` when not even a serial restore fits.
    """
    free = headroom.free
    jobs = max(1, requested)
    while jobs > 1 and connections_needed(jobs) > free:
        jobs -= 1
    if connections_needed(jobs) > free:
        raise StepError(
            "headroom",
            f"the verification server has no connection to spare: max_connections "
            f"{headroom.max_connections}, {headroom.in_use} in use, {headroom.reserved} reserved, "
            f"{headroom.margin} kept for applications",
        )
    note = f"{free} connections free beyond {headroom.margin} kept for applications"
    if jobs < requested:
        note = f"jobs reduced from {requested} to {jobs}: {note}"
    return jobs, f"jobs {jobs}; {note}"
