"""What a database holds, asked in SQL: tables, exact row counts, extensions, vector neighbours.

The same questions are asked twice: of the production database inside the snapshot a dump is
taken from (:mod:`pgwarden.backup.facts`), and of the scratch database a drill restored into
(:mod:`pgwarden.restore.checks`).  One home keeps both answers comparable.  Nearest-neighbour
probes run with index scans off, because ivfflat and HNSW searches are approximate and a probe
must be reproducible after a restore.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

TABLES_SQL = """
SELECT n.nspname, c.relname, pg_table_size(c.oid), c.reltuples::bigint
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm')
  AND c.relpersistence <> 't'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
  AND (c.relkind <> 'm' OR c.relispopulated)
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""


def qualified(schema: str, table: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))


def list_tables(conn: psycopg.Connection[Any]) -> list[tuple[str, str, int, int]]:
    return [(r[0], r[1], int(r[2] or 0), int(r[3] or 0)) for r in conn.execute(TABLES_SQL)]


def count_rows(conn: psycopg.Connection[Any], schema: str, table: str) -> int:
    query = sql.SQL("SELECT count(*) FROM ONLY {}").format(qualified(schema, table))
    row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0


def list_extensions(conn: psycopg.Connection[Any]) -> tuple[dict[str, str], ...]:
    rows = conn.execute("SELECT extname, extversion FROM pg_extension ORDER BY 1").fetchall()
    return tuple({"name": r[0], "version": r[1]} for r in rows if r[0] != "plpgsql")


def exact_search(conn: psycopg.Connection[Any], exact: bool = True) -> None:
    """Make nearest-neighbour queries exact in this transaction (no approximate index), or
    allow index scans again (``exact=False``)."""
    value = "off" if exact else "on"
    conn.execute(f"SET LOCAL enable_indexscan = {value}")
    conn.execute(f"SET LOCAL enable_bitmapscan = {value}")


def _column_types(
    conn: psycopg.Connection[Any], tbl: sql.Composed, *columns: str
) -> dict[str, sql.SQL]:
    rows = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
        "WHERE a.attrelid = %s::regclass AND a.attname = ANY(%s) AND NOT a.attisdropped",
        (tbl.as_string(conn), list(columns)),
    ).fetchall()
    return {str(r[0]): sql.SQL(str(r[1])) for r in rows}


def probe_neighbours(
    conn: psycopg.Connection[Any],
    schema: str,
    table: str,
    column: str,
    key_column: str,
    key: str,
    k: int,
) -> tuple[str, ...] | None:
    """Ids of the ``k`` rows nearest (L2) to the row ``key``; ``None`` if that row is gone.

    Runs inside a transaction (it sets ``enable_indexscan`` locally).  The probe row's vector
    is fetched first through the primary key (the recorded key, as text, cast to the key
    column's own type); then the exact search, with index scans off, takes that vector as a
    parameter: a plain scan with a top-k sort, which needs no statistics (a freshly restored
    table has none) and runs in parallel where the server allows.

    The backup and the drill both ask :func:`probe_neighbours_many`; this one-probe search is
    the reference its answers are tested against (``tests/test_facts.py``,
    ``tests/test_drill_probes.py``)."""
    tbl = qualified(schema, table)
    types = _column_types(conn, tbl, key_column, column)
    key_type = types.get(key_column, sql.SQL("text"))
    exact_search(conn, False)
    row = conn.execute(
        sql.SQL("SELECT {col}::text FROM {tbl} WHERE {key} = %s::{typ}").format(
            col=sql.Identifier(column), tbl=tbl, key=sql.Identifier(key_column), typ=key_type
        ),
        (key,),
    ).fetchone()
    if row is None or row[0] is None:
        return None
    exact_search(conn)
    query = sql.SQL(
        "SELECT {key}::text FROM {tbl} WHERE {col} IS NOT NULL "
        "ORDER BY {col} <-> %s::{vtype}, {key} LIMIT %s"
    ).format(
        key=sql.Identifier(key_column),
        col=sql.Identifier(column),
        tbl=tbl,
        vtype=types.get(column, sql.SQL("vector")),
    )
    rows = conn.execute(query, (row[0], k)).fetchall()
    return tuple(str(r[0]) for r in rows) if rows else None


def probe_neighbours_many(
    conn: psycopg.Connection[Any],
    schema: str,
    table: str,
    column: str,
    key_column: str,
    keys: list[str],
    k: int,
) -> dict[str, tuple[str, ...] | None]:
    """:func:`probe_neighbours` of several rows of one column in one scan of the table: the
    same answers (same distances, same order, ties by key), for one pass over the table instead
    of one per probe.  Each row's vector is read (and de-TOASTed) once into a materialized
    list of distances, of which each probe takes its ``k`` nearest (a top-k sort each)."""
    tbl = qualified(schema, table)
    types = _column_types(conn, tbl, key_column, column)
    key_type = types.get(key_column, sql.SQL("text"))
    vtype = types.get(column, sql.SQL("vector"))
    exact_search(conn, False)
    vectors: dict[str, str] = {}
    for key in keys:
        row = conn.execute(
            sql.SQL("SELECT {col}::text FROM {tbl} WHERE {key} = %s::{typ}").format(
                col=sql.Identifier(column), tbl=tbl, key=sql.Identifier(key_column), typ=key_type
            ),
            (key,),
        ).fetchone()
        if row is not None and row[0] is not None:
            vectors[key] = str(row[0])
    found: dict[str, tuple[str, ...] | None] = dict.fromkeys(keys)
    if not vectors:
        return found
    exact_search(conn)
    probes = list(vectors)
    col, keycol = sql.Identifier(column), sql.Identifier(key_column)
    distances = sql.SQL(", ").join(
        sql.SQL("e <-> %s::{vtype} AS {d}").format(vtype=vtype, d=sql.Identifier(f"d{i}"))
        for i in range(len(probes))
    )
    nearest = sql.SQL(" UNION ALL ").join(
        sql.SQL(
            "(SELECT {i} AS probe, y.{d} AS dist, y.{key} AS kv FROM y ORDER BY y.{d}, y.{key} "
            "LIMIT %s)"
        ).format(i=sql.Literal(i), key=keycol, d=sql.Identifier(f"d{i}"))
        for i in range(len(probes))
    )
    # (ARRAY[col])[1]: the vector de-TOASTed once per row, not once per probe
    query = sql.SQL(
        "WITH y AS MATERIALIZED (SELECT {key}, {distances} FROM (SELECT {key}, (ARRAY[{col}])[1] "
        "AS e FROM {tbl} WHERE {col} IS NOT NULL OFFSET 0) x) "
        "SELECT probe, kv::text FROM ({nearest}) u ORDER BY probe, dist, kv"
    ).format(key=keycol, distances=distances, col=col, tbl=tbl, nearest=nearest)
    params = [vectors[p] for p in probes] + [k] * len(probes)
    rows = conn.execute(query, params).fetchall()
    for i, key in enumerate(probes):
        ids = tuple(str(r[1]) for r in rows if r[0] == i)
        found[key] = ids or None
    return found
