"""The checks of a restored database against its backup's manifest.

* ``row_counts``: every table's exact ``count(*)`` equals the count the manifest recorded in the
  dump's own snapshot (tables the manifest only estimated are listed, not compared).  Counted
  on ``jobs`` connections in parallel, biggest tables first.
* ``extensions``: every extension the manifest lists exists in the restored database.
* ``sql:<name>``: the operator's ``[[targets.verify.checks]]``: the first column of the first
  row of ``sql`` must satisfy ``min``, ``max`` and/or ``equals``; reported with its values.
* ``vector_probes``: for every recorded pgvector probe, the exact nearest-neighbour search
  (:func:`pgwarden.pg.introspect.probe_neighbours`, index scans off) returns the same ids.

The same functions check a database restored for real (``pgwarden restore --verify``).  Queries
are cancelled when the drill's cancel event is set (:class:`QueryCanceller`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import date, datetime
from decimal import Decimal
from typing import Any, TypeVar

import psycopg

from pgwarden.archive.manifest import Manifest, TableCount, VectorProbe
from pgwarden.config import SqlCheck
from pgwarden.errors import describe
from pgwarden.pg import introspect
from pgwarden.pg.conninfo import ConnSpec
from pgwarden.restore.outcome import CheckResult, Failures, StepError

T = TypeVar("T")
R = TypeVar("R")

#: per-statement limit of an operator's SQL check on the scratch database
SQL_CHECK_TIMEOUT_MS = 10 * 60 * 1000


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


def _on_connections(
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


def check_row_counts(
    spec: ConnSpec, manifest: Manifest, canceller: QueryCanceller, jobs: int = 1
) -> CheckResult:
    started = time.monotonic()
    exact = sorted((t for t in manifest.tables if t.exact), key=lambda t: -t.bytes)
    estimated = [t.qualified for t in manifest.tables if not t.exact]
    if not manifest.tables:
        return CheckResult(
            "row_counts",
            True,
            f"no row counts in the manifest (row_counts = {manifest.row_count_mode})",
        )
    counted = _on_connections(
        spec, canceller, exact, jobs, lambda conn, table: _count(conn, table, canceller)
    )
    failures = Failures()
    total = 0
    for table, actual in zip(exact, counted, strict=True):
        if actual != table.rows:
            failures.add(table.qualified, table.rows, actual)
        elif isinstance(actual, int):
            total += actual
    detail = f"{len(exact)} tables, {total} rows, exact"
    if estimated:
        detail += (
            f"; {len(estimated)} only estimated at backup time, not compared: "
            f"{', '.join(estimated[:10])}"
        )
    return failures.result("row_counts", detail, time.monotonic() - started)


def _count(
    conn: psycopg.Connection[Any], table: TableCount, canceller: QueryCanceller
) -> int | str:
    try:
        return introspect.count_rows(conn, table.schema, table.table)
    except psycopg.errors.UndefinedTable:
        return "table missing"
    except psycopg.Error as exc:
        if canceller.cancelled:
            raise StepError("cancelled", "the drill was cancelled") from exc
        return f"error: {describe(exc)}"


# -- extensions ---------------------------------------------------------------------------------


def check_extensions(spec: ConnSpec, manifest: Manifest, canceller: QueryCanceller) -> CheckResult:
    started = time.monotonic()
    with canceller.connection(spec) as conn:
        present = {e["name"]: e["version"] for e in introspect.list_extensions(conn)}
    failures = Failures()
    notes = []
    for ext in manifest.extensions:
        name, version = ext.get("name", "?"), ext.get("version")
        if name not in present:
            failures.add(name, version, "missing")
        elif version and present[name] != version:
            notes.append(f"{name} {present[name]} (backup had {version})")
    detail = "missing" if failures else f"{len(manifest.extensions)} present"
    if notes:
        detail += "; other versions: " + ", ".join(notes)
    return failures.result("extensions", detail, time.monotonic() - started)


def check_extensions_available(
    conn: psycopg.Connection[Any], manifest: Manifest, where: str, server_major: int
) -> CheckResult:
    """Before restoring: every extension of the backup can be created on the server.

    Raises :class:`StepError` (``extensions_available``) naming each missing extension.
    """
    started = time.monotonic()
    rows = conn.execute("SELECT name, default_version FROM pg_available_extensions").fetchall()
    available = {str(r[0]): str(r[1]) for r in rows}
    wanted = [(e.get("name", "?"), e.get("version", "?")) for e in manifest.extensions]
    missing = [(name, version) for name, version in wanted if name not in available]
    if missing:
        listed = ", ".join(
            f"{n} {v}" + (" (pgvector)" if n == "vector" else "") for n, v in missing
        )
        hint = "; ".join(
            f"install postgresql-{server_major}-pgvector there"
            if n == "vector"
            else f"install the package providing {n} there"
            for n, _ in missing
        )
        raise StepError(
            "extensions_available",
            f"missing on {where} (PostgreSQL {server_major}): {listed}; the backup needs "
            f"{'them' if len(missing) > 1 else 'it'} before restoring — {hint}, or point "
            "[targets.verify] dsn at a server that has it",
            expected=[n for n, _ in wanted],
            actual=[n for n, _ in missing],
        )
    detail = f"{len(wanted)} available: " + ", ".join(n for n, _ in wanted) if wanted else "none"
    return CheckResult("extensions_available", True, detail, duration_s=time.monotonic() - started)


# -- the operator's SQL checks ----------------------------------------------------------------


def _jsonable(value: object) -> object:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float | Decimal):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def evaluate(check: SqlCheck, value: object) -> str | None:
    """``None`` if ``value`` satisfies ``check``, else why not."""
    number = _number(value)
    if check.equals is not None:
        wanted = check.equals
        if isinstance(wanted, bool) or not isinstance(wanted, int | float):
            if str(value if not isinstance(value, bool) else str(value).lower()) != str(wanted):
                return f"not equal to {wanted!r}"
        elif number is None or number != float(wanted):
            return f"not equal to {wanted!r}"
    if check.min is not None and (number is None or number < check.min):
        return f"below the minimum {check.min!r}" if number is not None else "not a number"
    if check.max is not None and (number is None or number > check.max):
        return f"above the maximum {check.max!r}" if number is not None else "not a number"
    return None


def check_sql(spec: ConnSpec, check: SqlCheck, canceller: QueryCanceller) -> CheckResult:
    started = time.monotonic()
    expected = {
        k: v
        for k, v in (("min", check.min), ("max", check.max), ("equals", check.equals))
        if v is not None
    }
    name = f"sql:{check.name}"
    with canceller.connection(spec) as conn:
        try:
            with conn.transaction():
                conn.execute("SET TRANSACTION READ ONLY")
                conn.execute(
                    "SELECT set_config('statement_timeout', %s, true)", (str(SQL_CHECK_TIMEOUT_MS),)
                )
                # prepare=True: the extended protocol (Parse), which refuses several
                # statements; the simple one would run "SELECT 1; COMMIT; <DDL>" past READ ONLY
                row = conn.execute(check.sql.encode(), prepare=True).fetchone()
        except psycopg.Error as exc:
            if canceller.cancelled:
                raise StepError("cancelled", "the drill was cancelled") from exc
            return CheckResult(
                name,
                False,
                f"{check.sql!r} failed",
                time.monotonic() - started,
                expected=expected,
                actual=f"error: {describe(exc)}",
            )
    actual: object
    if row is None or not row:
        passed, actual, detail = False, "no rows", f"{check.sql!r}"
    else:
        actual = _jsonable(row[0])
        problem = evaluate(check, row[0])
        passed = problem is None
        detail = f"{check.sql!r} = {actual!r}" + (f": {problem}" if problem else "")
    duration_s = time.monotonic() - started
    return CheckResult(name, passed, detail, duration_s, expected=expected, actual=actual)


# -- pgvector probes ---------------------------------------------------------------------------


def _probe(
    conn: psycopg.Connection[Any], probe: VectorProbe, canceller: QueryCanceller
) -> tuple[str, ...] | str:
    try:
        with conn.transaction():
            found = introspect.probe_neighbours(
                conn, probe.schema, probe.table, probe.column, probe.key_column, probe.key, probe.k
            )
    except psycopg.Error as exc:
        if canceller.cancelled:
            raise StepError("cancelled", "the drill was cancelled") from exc
        return f"error: {describe(exc)}"
    return "probe row missing" if found is None else tuple(found)


def check_vector_probes(
    spec: ConnSpec, manifest: Manifest, canceller: QueryCanceller, jobs: int = 1
) -> CheckResult:
    """Every recorded probe, on up to ``jobs`` connections in parallel."""
    started = time.monotonic()
    probes = list(manifest.vector_probes)
    if not probes:
        return CheckResult(
            "vector_probes",
            True,
            "no probes recorded (no pgvector column with a single-column key)",
        )
    found = _on_connections(
        spec, canceller, probes, jobs, lambda conn, probe: _probe(conn, probe, canceller)
    )
    failures = Failures()
    for probe, actual in zip(probes, found, strict=True):
        item = f"{probe.schema}.{probe.table}.{probe.column} {probe.key_column}={probe.key}"
        if isinstance(actual, str):
            failures.add(item, list(probe.neighbours), actual)
        elif actual != tuple(probe.neighbours):
            failures.add(item, list(probe.neighbours), list(actual))
    detail = (
        f"{len(failures)} of {len(probes)} probes returned other neighbours"
        if failures
        else f"{len(probes)} probes, exact search"
    )
    return failures.result("vector_probes", detail, time.monotonic() - started)


def run_checks(
    spec: ConnSpec,
    manifest: Manifest,
    sql_checks: tuple[SqlCheck, ...],
    canceller: QueryCanceller,
    *,
    jobs: int = 1,
) -> list[CheckResult]:
    """Every check of a restored database: counts, extensions, SQL, probes.

    The row counts (on ``jobs`` connections) beside the extensions, the SQL checks and then the
    probes (on one more): never more connections than the restore itself used.
    """

    def others() -> list[CheckResult]:
        results = [check_extensions(spec, manifest, canceller)]
        results.extend(check_sql(spec, check, canceller) for check in sql_checks)
        results.append(check_vector_probes(spec, manifest, canceller))
        return results

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="drill-checks") as pool:
        counts = pool.submit(check_row_counts, spec, manifest, canceller, jobs)
        rest = pool.submit(others)
        return [counts.result(), *rest.result()]
