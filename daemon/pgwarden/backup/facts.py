"""Snapshot facts: what exactly is in a dump, measured in the very snapshot it was taken from.

:class:`SnapshotSession` opens a ``REPEATABLE READ`` transaction, exports its snapshot
(``pg_export_snapshot()``) for ``pg_dump --snapshot``, and — in that same snapshot — counts
every table's rows (exact, or the planner's estimate above a size threshold, saying so), lists
extensions, and records pgvector probes: for a few stored vectors per vector column, the ids of
their ``k`` exact nearest neighbours, all of a column's probes in one scan of its table.  Index
scans are disabled for the probes, because ivfflat and HNSW searches are approximate and a probe
must be reproducible after a restore.  No query takes parallel workers: the facts have the
dump's whole run to finish, and workers would take CPU from pg_dump's backend.

The queries themselves (:mod:`pgwarden.pg.introspect`) run again on the restored database
during verification.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from pgwarden.archive.manifest import TableCount, VectorProbe
from pgwarden.pg.introspect import (
    count_rows,
    list_extensions,
    list_tables,
    probe_neighbours_many,
    qualified,
)

# vector columns of ordinary tables that have a single-column primary key
VECTOR_COLUMNS_SQL = """
SELECT n.nspname, c.relname, a.attname, pk.attname
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_type t ON t.oid = a.atttypid
JOIN LATERAL (
    SELECT ka.attname FROM pg_index i
    JOIN pg_attribute ka ON ka.attrelid = i.indrelid AND ka.attnum = i.indkey[0]
    WHERE i.indrelid = c.oid AND i.indisprimary AND i.indnkeyatts = 1
) pk ON true
WHERE t.typname = 'vector' AND a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
ORDER BY 1, 2, 3
"""


@dataclass(frozen=True)
class Facts:
    snapshot: str
    server_version: str
    server_version_num: int
    tables: tuple[TableCount, ...]
    extensions: tuple[dict[str, str], ...]
    vector_probes: tuple[VectorProbe, ...]


#: tables with more rows than this pick their probe rows from a sample of pages, not a scan
SAMPLE_ABOVE_ROWS = 20_000


def _probe_keys(
    conn: psycopg.Connection[Any],
    schema: str,
    table: str,
    column: str,
    key_column: str,
    count: int,
) -> list[str]:
    """A deterministic spread of rows (ordered by a hash of the key, not the first few ids).

    A big table is sampled (``TABLESAMPLE SYSTEM ... REPEATABLE``: a few pages instead of a
    scan that competes with pg_dump); the whole table is the fallback when the sample holds
    too few rows with a vector."""
    tbl = qualified(schema, table)
    query = sql.SQL(
        "SELECT {key}::text FROM {tbl}{sample} WHERE {col} IS NOT NULL "
        "ORDER BY md5({key}::text) LIMIT %s"
    )
    row = conn.execute(
        "SELECT reltuples FROM pg_class WHERE oid = %s::regclass", (tbl.as_string(conn),)
    ).fetchone()
    estimate = float(row[0]) if row else -1.0
    if estimate > SAMPLE_ABOVE_ROWS:
        percent = min(100.0, 100.0 * max(50 * count, 1000) / estimate)
        sampled = query.format(
            key=sql.Identifier(key_column),
            col=sql.Identifier(column),
            tbl=tbl,
            sample=sql.SQL(" TABLESAMPLE SYSTEM ({}) REPEATABLE (0)").format(
                sql.Literal(round(percent, 6))
            ),
        )
        keys = [str(r[0]) for r in conn.execute(sampled, (count,))]
        if len(keys) >= count:
            return keys
    full = query.format(
        key=sql.Identifier(key_column), col=sql.Identifier(column), tbl=tbl, sample=sql.SQL("")
    )
    return [str(r[0]) for r in conn.execute(full, (count,))]


class SnapshotSession:
    """The transaction whose exported snapshot the dump uses; keep it open until pg_dump ends."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        conn.autocommit = False
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        row = conn.execute("SELECT pg_export_snapshot()").fetchone()
        assert row is not None
        self.snapshot = str(row[0])

    def collect(self, *, mode: str, exact_max_bytes: int, probes: int, probe_k: int) -> Facts:
        conn = self.conn
        # no parallel workers for the counts and probes: they answer no faster than the dump
        # runs anyway, and each worker repeats the scan's setup and competes for the cores
        # pg_dump's backend needs (an exact probe's scan cost 3x the CPU with two workers;
        # benchmarks/profile_backup.py: -1.2 CPU-s of 13.8 on the app shape)
        conn.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        row = conn.execute(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int"
        ).fetchone()
        assert row is not None
        tables: list[TableCount] = []
        if mode != "off":
            for schema, table, size, estimate in list_tables(conn):
                if mode == "exact" and size <= exact_max_bytes:
                    tables.append(
                        TableCount(schema, table, count_rows(conn, schema, table), True, size)
                    )
                else:
                    tables.append(TableCount(schema, table, max(estimate, 0), False, size))
        vector_probes: list[VectorProbe] = []
        has_vector = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone()
        if probes > 0 and has_vector:
            for schema, table, column, key_column in conn.execute(VECTOR_COLUMNS_SQL).fetchall():
                keys = _probe_keys(conn, schema, table, column, key_column, probes)
                # every probe of a column in one scan (a drill asks them one by one)
                answers = probe_neighbours_many(
                    conn, schema, table, column, key_column, keys, probe_k
                )
                vector_probes.extend(
                    VectorProbe(schema, table, column, key_column, key, probe_k, found)
                    for key, found in answers.items()
                    if found
                )
        return Facts(
            snapshot=self.snapshot,
            server_version=str(row[0]),
            server_version_num=int(row[1]),
            tables=tuple(tables),
            extensions=list_extensions(conn),
            vector_probes=tuple(vector_probes),
        )

    def close(self) -> None:
        try:
            self.conn.rollback()
        finally:
            self.conn.close()
