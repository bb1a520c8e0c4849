"""Connections to a restored database for its checks: :class:`QueryCanceller` cancels their
running queries once the drill's cancel event is set, and :func:`on_connections` runs a list
of queries on a few connections in parallel, each connection taking the next item when free.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg

from pgwarden.errors import describe
from pgwarden.pg.conninfo import ConnSpec
from pgwarden.restore.outcome import StepError

T = TypeVar("T")
R = TypeVar("R")


class QueryCanceller:
    """Cancels the running query of every watched connection once ``cancel`` is set."""

    def __init__(self, cancel: threading.Event | None) -> None:
        self._cancel = cancel
        self._conns: set[psycopg.Connection[Any]] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if cancel is not None:
            self._thread = threading.Thread(target=self._watch, name="drill-canceller", daemon=True)
            self._thread.start()

    def _watch(self) -> None:
        assert self._cancel is not None
        while not self._stop.wait(0.1):
            if self._cancel.is_set():
                with self._lock:
                    for conn in self._conns:
                        conn.cancel_safe(timeout=5.0)
                return

    @property
    def cancelled(self) -> bool:
        return self._cancel is not None and self._cancel.is_set()

    @contextmanager
    def connection(self, spec: ConnSpec) -> Iterator[psycopg.Connection[Any]]:
        """A connection to the restored database, watched for cancellation."""
        if self.cancelled:
            raise StepError("cancelled", "the drill was cancelled")
        try:
            conn = spec.connect(application_name="pgwarden-verify", autocommit=True)
        except psycopg.Error as exc:
            # libpq's connection errors never quote the password: chained
            raise StepError(
                "checks", f"cannot connect to {spec.redacted()}: {describe(exc)}"
            ) from exc
        with self._lock:
            self._conns.add(conn)
        try:
            yield conn
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


# -- row counts -----------------------------------------------------------------------------------


def on_connections(
    spec: ConnSpec,
    canceller: QueryCanceller,
    items: Sequence[T],
    jobs: int,
    run: Callable[[psycopg.Connection[Any], T], R],
) -> list[R]:
    """``run(conn, item)`` for every item, on up to ``jobs`` connections to the restored
    database, each taking the next item when free; the results in the items' order."""
    pending = list(enumerate(items))
    lock = threading.Lock()
    results: dict[int, R] = {}

    def worker() -> None:
        with canceller.connection(spec) as conn:
            while True:
                with lock:
                    if not pending:
                        return
                    index, item = pending.pop(0)
                results[index] = run(conn, item)

    workers = max(1, min(jobs, len(items)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="drill-check") as pool:
        for future in [pool.submit(worker) for _ in range(workers)]:
            future.result()
    return [results[index] for index in range(len(items))]
