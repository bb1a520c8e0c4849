"""Stalled runs: the watchdog that cancels a dump or a restore which stopped making progress.

A :class:`StallWatch` is fed progress by the pipeline it watches and, on a thread of its own,
asks the server whether the tool's sessions are working.  When neither happened for
``stall_timeout`` seconds it records why (:attr:`StallWatch.stalled`, ``"stalled: no
progress for 300 s while dumping (pg_dump's session waits on Lock:relation)"``) and sets its
cancel event, which the tool runner (:mod:`pgwarden.pg.process`) obeys like an operator's
cancel: SIGTERM to the tool's group, a grace, SIGKILL.  The caller then raises the stall as
the run's error.  ``stall_timeout = 0`` disables the watch: :attr:`StallWatch.cancel` is then
the caller's own event.

What counts as progress, per pipeline:

* **dump** (``pg_dump``): bytes read from pg_dump's stdout, or, when pg_dump writes the
  artifact itself, the artifact growing on disk (:func:`path_size`); or one of pg_dump's
  sessions, or the snapshot session counting rows beside it, working on the server (below).
  Reading the catalog of a database with many objects writes nothing for a while: the
  server-side probe sees those queries.
* **restore** (``pg_restore``/``psql``): bytes fed into the tool's stdin (a streamed
  restore); or the tool's sessions working on the server.  Building an index or validating
  a foreign key reads nothing from the archive for minutes: that is work, not a stall.

A tool's session "works" when the probe (:class:`SessionProbe`, one short query on a
connection of the watch's own every poll) finds one of its backends -- recognised by a
unique ``application_name`` the caller puts in the tool's conninfo -- ``active`` and *not*
waiting on a ``Lock`` (blocked by another session) or on ``Client`` (waiting for the tool
itself, which the byte count covers), or sees a backend start a new statement.  A session
blocked on a lock for ``stall_timeout`` is a stall; so is a tool that stopped sending.  A
probe that cannot connect or query proves nothing either way: only bytes count then.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg

from pgwarden.errors import describe
from pgwarden.logsetup import get_logger
from pgwarden.pg.conninfo import ConnSpec

log = get_logger("pgwarden.stall")

#: seconds between two looks at the probes (at most; a small timeout polls faster)
MAX_POLL_S = 1.0
#: how soon the caller's cancel reaches the watched tools, seconds
CANCEL_POLL_S = 0.1
#: the probe's statement timeout, milliseconds
PROBE_STATEMENT_TIMEOUT_MS = 5000

ACTIVITY_SQL = """
SELECT pid, state, coalesce(wait_event_type, ''), coalesce(wait_event, ''),
       query_start::text
FROM pg_stat_activity
WHERE (application_name = %s OR pid = ANY(%s)) AND pid <> pg_backend_pid()
ORDER BY pid
"""

#: progress that is not bytes: a callable returning True when work happened since last call
Probe = Callable[[], bool]


class SessionProbe:
    """Whether a tool's server sessions (``application_name = tag``, and the backends
    ``pids`` of pgwarden's own that belong to the run) are working; the last look's waits
    are kept for the stall's message.  Its connection is opened at the first
    call and closed by :meth:`close`."""

    def __init__(self, spec: ConnSpec, tag: str, pids: tuple[int, ...] = ()) -> None:
        self.spec = spec
        self.tag = tag
        self.pids = list(pids)
        self.waiting = ""
        self._conn: psycopg.Connection[Any] | None = None
        self._seen: set[tuple[int, str]] = set()
        self._failed = False

    def __call__(self) -> bool:
        try:
            rows = self._rows()
        except psycopg.Error as exc:
            if not self._failed:  # once: a probe that cannot look proves nothing
                log.warning("cannot watch the tool's sessions", error=describe(exc))
                self._failed = True
            self.close()
            return False
        started = {(int(r[0]), str(r[4])) for r in rows if r[4] is not None}
        new_statement = bool(started - self._seen) and bool(self._seen)
        self._seen = started
        working = any(r[1] == "active" and r[2] not in ("Lock", "Client") for r in rows)
        waits = sorted({f"{r[2]}:{r[3]}" for r in rows if r[1] == "active" and r[2]})
        self.waiting = ", ".join(waits)
        return working or new_statement

    def _rows(self) -> list[tuple[Any, ...]]:
        if self._conn is None or self._conn.closed:
            conn = self.spec.connect(application_name="pgwarden-stallwatch", autocommit=True)
            # a SET, not a startup option: PgBouncer refuses ``options``
            conn.execute(f"SET statement_timeout = {PROBE_STATEMENT_TIMEOUT_MS}")
            self._conn = conn
        return list(self._conn.execute(ACTIVITY_SQL, (self.tag, self.pids)).fetchall())

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None


def path_size(path: Path) -> int:
    """Bytes under ``path`` (a file, or a directory's files): pg_dump writing it itself."""
    with contextlib.suppress(OSError):
        if path.is_dir():
            total = 0
            for entry in os.scandir(path):
                with contextlib.suppress(OSError):
                    total += entry.stat(follow_symlinks=False).st_size
            return total
        return path.stat().st_size
    return 0


def growing(size: Callable[[], int]) -> Probe:
    """A probe that reports progress whenever ``size()`` changed since its last call."""
    last = [size()]

    def probe() -> bool:
        now = size()
        moved, last[0] = now != last[0], now
        return moved

    return probe


class StallWatch:
    """Cancels a run that made no progress for ``timeout`` seconds (module docstring).

    Use as a context manager around the run; pass :attr:`cancel` to the tools; call
    :meth:`moved` with each chunk's size; set :attr:`doing` to what the run is doing (it
    goes into the message).  ``timeout`` of 0 or ``None`` disables it."""

    def __init__(
        self,
        timeout: float | None,
        *,
        doing: str,
        upstream: threading.Event | None = None,
        probes: tuple[Probe, ...] = (),
        session: SessionProbe | None = None,
    ) -> None:
        self.timeout = timeout if timeout and timeout > 0 else None
        self.doing = doing
        self.stalled: str | None = None
        self._upstream = upstream
        self._probes = probes
        self._session = session
        self._event = threading.Event() if self.timeout is not None else None
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def cancel(self) -> threading.Event | None:
        """The event the watched tools obey: set by the caller's cancel or by a stall."""
        return self._event if self._event is not None else self._upstream

    def moved(self, count: int = 1) -> None:
        """``count`` bytes (or steps) moved: the run is alive."""
        if count > 0:
            self._last = time.monotonic()

    def __enter__(self) -> StallWatch:
        if self.timeout is not None:
            self._last = time.monotonic()
            self._thread = threading.Thread(target=self._run, name="stallwatch", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._session is not None:
            self._session.close()

    def _run(self) -> None:
        assert self.timeout is not None and self._event is not None
        poll = min(MAX_POLL_S, self.timeout / 4)
        next_look = time.monotonic() + poll
        # the caller's cancel is passed on within CANCEL_POLL_S; the probes run every ``poll``
        while not self._stop.wait(min(CANCEL_POLL_S, poll)):
            if self._upstream is not None and self._upstream.is_set():
                self._event.set()
                return
            if time.monotonic() < next_look:
                continue
            next_look = time.monotonic() + poll
            if self._progressed():
                self._last = time.monotonic()
            elif time.monotonic() - self._last >= self.timeout:
                self.stalled = self._reason()
                log.warning("run stalled: cancelling it", reason=self.stalled)
                self._event.set()
                return

    def _progressed(self) -> bool:
        progressed = False
        for probe in self._probes:
            progressed = probe() or progressed
        if self._session is not None:
            progressed = self._session() or progressed
        return progressed

    def _reason(self) -> str:
        reason = f"stalled: no progress for {self.timeout:g} s while {self.doing}"
        waiting = self._session.waiting if self._session is not None else ""
        if waiting:
            reason += f" (its sessions wait on {waiting})"
        return reason


@contextlib.contextmanager
def watching(
    timeout: float | None,
    *,
    doing: str,
    upstream: threading.Event | None,
    spec: ConnSpec | None = None,
    tag: str | None = None,
    pids: tuple[int, ...] = (),
    probes: tuple[Probe, ...] = (),
) -> Iterator[StallWatch]:
    """A :class:`StallWatch` for the block, probing the sessions named ``tag`` (and the
    backends ``pids``) on ``spec``'s server when ``spec`` and ``tag`` are given."""
    session = SessionProbe(spec, tag, pids) if spec is not None and tag is not None else None
    with StallWatch(
        timeout, doing=doing, upstream=upstream, probes=probes, session=session
    ) as watch:
        yield watch


def session_tag(kind: str) -> str:
    """A unique ``application_name`` for one run's tool sessions (``pgwarden-dump-1a2b3c4d``)."""
    return f"pgwarden-{kind}-{os.urandom(4).hex()}"
