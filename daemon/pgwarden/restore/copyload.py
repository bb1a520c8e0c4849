"""A drill's data section, loaded over several connections with one table's rows shared
between them.

``pg_restore --jobs`` gives each table to one worker: a database whose time is one big table
(or one big table last) restores at the speed of one backend parsing that table's rows, however
many cores the server has.  Here stock ``pg_restore`` still decodes every block of the
archive (``--section=data --file=-``: the drill proves what the operator's tool reads), its
script is cut by :mod:`pgwarden.restore.datascript`, and each piece of rows (about 1 MiB of
whole lines) goes to whichever of ``jobs`` connections is free, inside a ``COPY ... FROM
stdin`` of that table held open on it.  A table's rows therefore land in any order, spread over
the connections -- nothing a scratch database checked by counts and exact searches can tell.

Only drills load this way; ``pgwarden restore`` keeps stock ``pg_restore`` end to end.  Every
connection first runs the script's session settings; statements other than rows (sequence
values, large objects) run in order on one more connection.  A failed ``COPY`` is an error of
the restore (``pgwarden: error: COPY failed for table ...``) and the rest goes on, as with
``pg_restore``; the failed table's other pieces, loaded by other connections, stay, which
the row counts then report too.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import psycopg

from pgwarden.errors import describe
from pgwarden.pg.conninfo import ConnSpec
from pgwarden.restore.datascript import (
    PIECE_BYTES,
    CopyEnd,
    CopyStart,
    Event,
    Rows,
    ScriptCutter,
    ScriptError,
    Statements,
)
from pgwarden.restore.toolerrors import LOADER_ERROR_PREFIX

_PUT_POLL_S = 0.2


@dataclass(frozen=True)
class Loaded:
    """What the loader did: tables and rows loaded, bytes of script read, and whether it read
    the script to its end (not stopped by a cancel, a damaged script or lost connections)."""

    tables: int
    rows: int
    script_bytes: int
    complete: bool


@dataclass(frozen=True)
class _Piece:
    table: int
    statement: str
    parts: tuple[memoryview, ...]


class _Errors:
    """The loader's error lines, shared by its threads, each said once."""

    def __init__(self, sink: Callable[[str], None]) -> None:
        self._sink = sink
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def add(self, message: str) -> None:
        line = LOADER_ERROR_PREFIX + message
        with self._lock:
            if line in self._seen:
                return
            self._seen.add(line)
        self._sink(line)


def _table_name(statement: str) -> str:
    """``COPY public.t (a, b) FROM stdin;`` -> ``public.t`` (for messages)."""
    head = statement.removeprefix("COPY ")
    return head.split(" (", 1)[0].split(" FROM stdin", 1)[0]


class _Connections:
    """The loader's connections: opened with the script's settings, cancelled together."""

    def __init__(self, spec: ConnSpec, settings: list[str], tag: str, errors: _Errors) -> None:
        self._spec, self._settings, self._tag, self._errors = spec, settings, tag, errors
        self._open: set[psycopg.Connection[Any]] = set()
        self._lock = threading.Lock()
        self.cancelled = False

    def open(self) -> psycopg.Connection[Any]:
        conn = self._spec.connect(application_name=self._tag, autocommit=True)
        with self._lock:
            self._open.add(conn)
            if self.cancelled:
                conn.cancel_safe(timeout=5.0)
        for setting in self._settings:
            try:
                conn.execute(setting)
            except psycopg.Error as exc:
                # e.g. SET transaction_timeout on a server before 17 (pg_restore says the same)
                self._errors.add(f"could not execute query: {describe(exc)}")
        return conn

    def close(self, conn: psycopg.Connection[Any]) -> None:
        with self._lock:
            self._open.discard(conn)
        conn.close()

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            for conn in self._open:
                with contextlib.suppress(psycopg.Error):
                    conn.cancel_safe(timeout=5.0)


class _OpenCopy:
    """One table's ``COPY ... FROM stdin`` held open on a connection across pieces."""

    def __init__(self, conn: psycopg.Connection[Any], piece: _Piece) -> None:
        self.table = piece.table
        self.name = _table_name(piece.statement)
        self._cursor = conn.cursor()
        self._stack = contextlib.ExitStack()
        self._copy = self._stack.enter_context(self._cursor.copy(piece.statement))

    def write(self, parts: Iterable[memoryview]) -> None:
        for part in parts:
            self._copy.write(part)

    def close(self) -> int:
        """End the COPY: the rows it loaded."""
        self._stack.close()
        return max(self._cursor.rowcount, 0)

    def abort(self, exc: BaseException) -> None:
        with contextlib.suppress(psycopg.Error):
            self._stack.__exit__(type(exc), exc, exc.__traceback__)


class _Worker:
    """One connection taking pieces off the queue until it gets ``None``."""

    def __init__(
        self, conns: _Connections, pieces: queue.Queue[_Piece | None], errors: _Errors
    ) -> None:
        self._conns, self._pieces, self._errors = conns, pieces, errors
        self.rows = 0
        self.thread = threading.Thread(target=self._run, name="drill-copy", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            conn = self._conns.open()
        except psycopg.Error as exc:
            self._errors.add(f"could not connect to load data: {describe(exc)}")
            self._drain()
            return
        try:
            self._load(conn)
        finally:
            self._conns.close(conn)

    def _load(self, conn: psycopg.Connection[Any]) -> None:
        current: _OpenCopy | None = None
        failed: set[int] = set()
        while (piece := self._pieces.get()) is not None:
            if piece.table in failed or self._conns.cancelled:
                continue
            try:
                if current is None or current.table != piece.table:
                    if current is not None:
                        self._end(current, failed)
                    current = _OpenCopy(conn, piece)
                current.write(piece.parts)
            except psycopg.Error as exc:
                failed.add(piece.table)
                self._errors.add(
                    f"COPY failed for table {_table_name(piece.statement)}: {describe(exc)}"
                )
                if current is not None and current.table == piece.table:
                    current.abort(exc)
                current = None
                if conn.closed:
                    self._drain()
                    return
        if current is not None:
            self._end(current, failed)

    def _end(self, current: _OpenCopy, failed: set[int]) -> None:
        try:
            self.rows += current.close()
        except psycopg.Error as exc:
            failed.add(current.table)
            self._errors.add(f"COPY failed for table {current.name}: {describe(exc)}")

    def _drain(self) -> None:
        """Take what is queued without loading it (this connection is gone), up to the end."""
        while self._pieces.get() is not None:
            pass


def load(
    reads: Iterable[bytes],
    spec: ConnSpec,
    jobs: int,
    *,
    tag: str,
    error_sink: Callable[[str], None],
    moved: Callable[[int], None] = lambda _n: None,
    cancel: threading.Event | None = None,
    piece_bytes: int = PIECE_BYTES,
) -> Loaded:
    """Load the script whose bytes ``reads`` yields into the database ``spec`` names, over
    ``jobs`` connections for rows plus one for other statements (opened when first needed).
    Error lines go to ``error_sink``; ``moved`` is told of every read (the stall watch)."""
    errors = _Errors(error_sink)
    cutter = ScriptCutter(piece_bytes)
    pieces: queue.Queue[_Piece | None] = queue.Queue(maxsize=2 * jobs)
    loader = _Dispatch(cutter, spec, jobs, tag, errors, pieces, cancel)
    read, complete = 0, False
    try:
        for data in reads:
            read += len(data)
            moved(len(data))
            if not loader.take(cutter.feed(data)):
                break
        else:
            complete = loader.take(cutter.finish())
    except ScriptError as exc:
        errors.add(f"cannot load the data section: {exc}")
    finally:
        rows = loader.close()
    return Loaded(cutter.tables, rows, read, complete)


class _Dispatch:
    """Events of the script to the workers (rows) or the statement connection (SQL)."""

    def __init__(
        self,
        cutter: ScriptCutter,
        spec: ConnSpec,
        jobs: int,
        tag: str,
        errors: _Errors,
        pieces: queue.Queue[_Piece | None],
        cancel: threading.Event | None,
    ) -> None:
        self._cutter, self._spec, self._jobs, self._tag = cutter, spec, jobs, tag
        self._errors, self._pieces, self._cancel = errors, pieces, cancel
        self._conns: _Connections | None = None
        self._workers: list[_Worker] = []
        self._statements: psycopg.Connection[Any] | None = None
        self._copy = ""

    @property
    def _stopped(self) -> bool:
        return self._cancel is not None and self._cancel.is_set()

    def _connections(self) -> _Connections:
        if self._conns is None:  # the settings are known once the first entry begins
            self._conns = _Connections(self._spec, self._cutter.settings, self._tag, self._errors)
        return self._conns

    def take(self, events: Iterable[Event]) -> bool:
        """Hand on ``events``; ``False`` once the load is cancelled or has no worker left."""
        for event in events:
            if isinstance(event, Rows):
                if not self._put(_Piece(event.table, self._copy, event.parts)):
                    return False
            elif isinstance(event, CopyStart):
                self._copy = event.statement
            elif isinstance(event, Statements):
                self._run(event.sql)
            else:
                assert isinstance(event, CopyEnd)
        return not self._stopped

    def _put(self, piece: _Piece) -> bool:
        if not self._workers:
            conns = self._connections()
            self._workers = [_Worker(conns, self._pieces, self._errors) for _ in range(self._jobs)]
        while True:
            if self._stopped:
                self._obey_cancel()
                return False
            try:
                self._pieces.put(piece, timeout=_PUT_POLL_S)
            except queue.Full:
                if not any(w.thread.is_alive() for w in self._workers):
                    self._errors.add("no connection is left to load the data")
                    return False
            else:
                return True

    def _obey_cancel(self) -> None:
        if self._stopped and self._conns is not None and not self._conns.cancelled:
            self._conns.cancel()

    def _run(self, sql: str) -> None:
        try:
            if self._statements is None:
                self._statements = self._connections().open()
            self._statements.execute(sql.encode())
        except psycopg.Error as exc:
            self._errors.add(f"could not execute query: {describe(exc)}")

    def close(self) -> int:
        """Stop the workers once they have loaded what is queued: the rows they loaded."""
        ends = len(self._workers)  # one None for each worker, loading or draining
        while ends and any(w.thread.is_alive() for w in self._workers):
            self._obey_cancel()
            try:
                self._pieces.put(None, timeout=_PUT_POLL_S)
                ends -= 1
            except queue.Full:
                continue
        for worker in self._workers:
            while worker.thread.is_alive():  # a cancel while the last pieces load stops them
                worker.thread.join(_PUT_POLL_S)
                self._obey_cancel()
        if self._statements is not None and self._conns is not None:
            self._conns.close(self._statements)
        return sum(w.rows for w in self._workers)
