"""The checks of a restored database against its backup's manifest.

* ``row_counts``: every table's exact ``count(*)`` equals the count the manifest recorded in the
  dump's own snapshot (tables the manifest only estimated are listed, not compared).  Counted
  on ``jobs`` connections in parallel, biggest tables first -- in a drill, together with the
  probes (:func:`counts_and_probes`).
* ``extensions``: every extension the manifest lists exists in the restored database.
* ``sql:<name>``: the operator's ``[[targets.verify.checks]]``: the first column of the first
  row of ``sql`` must satisfy ``min``, ``max`` and/or ``equals``; reported with its values.
* ``vector_probes``: for every recorded pgvector probe, the exact nearest-neighbour search
  (index scans off) returns the same ids; the probes of one column share one scan of its
  table (:func:`pgwarden.pg.introspect.probe_neighbours_many`).

The same functions check a database restored for real (``pgwarden restore --verify``).  Queries
are cancelled when the drill's cancel event is set (:class:`QueryCanceller`,
:mod:`.querypool`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import psycopg

from pgwarden.archive.manifest import Manifest, TableCount, VectorProbe
from pgwarden.config import SqlCheck
from pgwarden.errors import describe
from pgwarden.pg import introspect
from pgwarden.pg.conninfo import ConnSpec
from pgwarden.restore.outcome import CheckResult, Failures, StepError
from pgwarden.restore.querypool import QueryCanceller, on_connections

__all__ = ["QueryCanceller", "counts_and_probes", "evaluate", "run_checks"]

#: what one count or probe found: a count, the neighbours' ids, or what went wrong
Answer = int | str | tuple[str, ...]

#: per-statement limit of an operator's SQL check on the scratch database
SQL_CHECK_TIMEOUT_MS = 10 * 60 * 1000


def _exact_tables(manifest: Manifest) -> list[TableCount]:
    return sorted((t for t in manifest.tables if t.exact), key=lambda t: -t.bytes)


def _judge_counts(
    manifest: Manifest, exact: list[TableCount], counted: Sequence[Answer], took: float
) -> CheckResult:
    estimated = [t.qualified for t in manifest.tables if not t.exact]
    if not manifest.tables:
        return CheckResult(
            "row_counts",
            True,
            f"no row counts in the manifest (row_counts = {manifest.row_count_mode})",
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
    return failures.result("row_counts", detail, took)


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


@dataclass(frozen=True)
class _ProbeScan:
    """The recorded probes of one vector column (and ``k``): answered by one scan of its
    table (:func:`pgwarden.pg.introspect.probe_neighbours_many`, index scans off), each row's
    vector de-TOASTed once for all of them, with the same answers as one search per probe."""

    probes: tuple[VectorProbe, ...]

    @property
    def first(self) -> VectorProbe:
        return self.probes[0]


def _probe_scans(probes: list[VectorProbe]) -> list[_ProbeScan]:
    columns: dict[tuple[str, str, str, str, int], list[VectorProbe]] = {}
    for p in probes:
        columns.setdefault((p.schema, p.table, p.column, p.key_column, p.k), []).append(p)
    return [_ProbeScan(tuple(group)) for group in columns.values()]


def _probe(
    conn: psycopg.Connection[Any], scan: _ProbeScan, canceller: QueryCanceller
) -> list[Answer]:
    """Each probe's neighbours, in the order of ``scan.probes``."""
    p = scan.first
    keys = [probe.key for probe in scan.probes]
    try:
        with conn.transaction():
            found = introspect.probe_neighbours_many(
                conn, p.schema, p.table, p.column, p.key_column, keys, p.k
            )
    except psycopg.Error as exc:
        if canceller.cancelled:
            raise StepError("cancelled", "the drill was cancelled") from exc
        return [f"error: {describe(exc)}"] * len(keys)
    return ["probe row missing" if (ids := found.get(key)) is None else tuple(ids) for key in keys]


def _judge_probes(probes: list[VectorProbe], found: Sequence[Answer], took: float) -> CheckResult:
    if not probes:
        return CheckResult(
            "vector_probes",
            True,
            "no probes recorded (no pgvector column with a single-column key)",
        )
    failures = Failures()
    for probe, actual in zip(probes, found, strict=True):
        item = f"{probe.schema}.{probe.table}.{probe.column} {probe.key_column}={probe.key}"
        if isinstance(actual, str):
            failures.add(item, list(probe.neighbours), actual)
        elif actual != tuple(probe.neighbours):
            failures.add(
                item, list(probe.neighbours), list(actual) if isinstance(actual, tuple) else actual
            )
    detail = (
        f"{len(failures)} of {len(probes)} probes returned other neighbours"
        if failures
        else f"{len(probes)} probes, exact search"
    )
    return failures.result("vector_probes", detail, took)


def counts_and_probes(
    spec: ConnSpec, manifest: Manifest, canceller: QueryCanceller, jobs: int = 1
) -> tuple[CheckResult, CheckResult]:
    """The ``row_counts`` and ``vector_probes`` checks sharing ``jobs`` connections, costliest
    query first (the probes of a column rank every row of its table, index scans off: weighed
    as one count of that table per probe, plus one), so that neither check waits for the
    other's slowest query."""
    started = time.monotonic()
    exact, probes = _exact_tables(manifest), list(manifest.vector_probes)
    scans = _probe_scans(probes)
    sizes = {(t.schema, t.table): t.bytes for t in manifest.tables}

    def cost(item: TableCount | _ProbeScan) -> int:
        if isinstance(item, TableCount):
            return item.bytes
        return (1 + len(item.probes)) * sizes.get((item.first.schema, item.first.table), 0)

    items: list[TableCount | _ProbeScan] = sorted([*exact, *scans], key=cost, reverse=True)
    finished: dict[int, float] = {}

    def run(conn: psycopg.Connection[Any], item: TableCount | _ProbeScan) -> list[Answer]:
        answers: list[Answer] = (
            [_count(conn, item, canceller)]
            if isinstance(item, TableCount)
            else _probe(conn, item, canceller)
        )
        finished[id(item)] = time.monotonic() - started
        return answers

    found = on_connections(spec, canceller, items, jobs, run)
    answers = dict(zip(map(id, items), found, strict=True))
    took = {
        kind: max((finished[id(i)] for i in group), default=0.0)
        for kind, group in (("c", exact), ("p", scans))
    }
    probe_answers = {id(p): a for s in scans for p, a in zip(s.probes, answers[id(s)], strict=True)}
    return (
        _judge_counts(manifest, exact, [answers[id(t)][0] for t in exact], took["c"]),
        _judge_probes(probes, [probe_answers[id(p)] for p in probes], took["p"]),
    )


def run_checks(
    spec: ConnSpec,
    manifest: Manifest,
    sql_checks: tuple[SqlCheck, ...],
    canceller: QueryCanceller,
    *,
    jobs: int = 1,
) -> list[CheckResult]:
    """Every check of a restored database: counts, extensions, SQL, probes.

    The row counts and the probes (on ``jobs`` connections, :func:`counts_and_probes`) beside
    the extensions and the SQL checks (on one more): never more connections than the restore
    itself used.
    """

    def others() -> list[CheckResult]:
        results = [check_extensions(spec, manifest, canceller)]
        results.extend(check_sql(spec, check, canceller) for check in sql_checks)
        return results

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="drill-checks") as pool:
        both = pool.submit(counts_and_probes, spec, manifest, canceller, jobs)
        rest = pool.submit(others)
        counts, probes = both.result()
        return [counts, *rest.result(), probes]
