"""How a drill's scratch tables are stored while its data loads: settings of a throwaway
copy that change no value a drill reads, only what loading and checking it costs.

After the schema (``--section=pre-data``) and before the data, while every table is still
empty (:func:`prepare_tables`):

* **unlogged, without autovacuum**: no WAL for a database dropped minutes later (none shipped
  to replicas or archives), no autovacuum racing the restore and the index builds for the CPU.
  Skipped when the schema has partitioned tables: those stay permanent, and a permanent
  table's foreign key cannot reference an unlogged one.
* **rows with a never-compressed column kept whole up to a page** (``toast_tuple_target =
  8160``): a column with ``EXTERNAL`` storage -- pgvector's ``vector``, ``halfvec`` and
  ``sparsevec`` -- is never compressed, and by default leaves its row for the TOAST table as
  soon as the row passes ~2 kB: one more heap insert and one more index insert per row at
  load time, and an index lookup per row for every scan that reads it (the ivfflat or HNSW
  build, the vector probes).  Kept in the row, it takes the same space; only the row's other
  compressible values (text, jsonb) stay uncompressed while the row fits in a page (the
  benchmark's ``app`` documents, 2.0 kB rows with a ``vector(384)``, a text body and jsonb:
  267 MB instead of 249 MB).  There: the drill 9% faster, 1.2 CPU-s less on the server, the
  probes 0.5 s -> 0.3 s.  Tables without such a column keep the default.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from pgwarden.errors import describe
from pgwarden.pg.conninfo import ConnSpec
from pgwarden.restore.scratch import connect

#: the user tables a drill may make unlogged (not an extension's own)
UNLOGGABLE_SQL = """
SELECT c.oid::regclass::text,
       EXISTS (SELECT 1 FROM pg_attribute a
               WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                 AND a.attstorage = 'e')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.relpersistence = 'p'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
"""

#: the most a row may hold before PostgreSQL moves its values out (its maximum)
WHOLE_ROW_TARGET = 8160


def prepare_tables(spec: ConnSpec, lock_timeout: float | None = None) -> str:
    """Make the scratch database's (still empty) tables unlogged and without autovacuum, and
    keep rows with a never-compressed column whole (see the module docstring); say what was
    done.

    Any refusal turns the tables already changed back to logged (they are empty: both ways
    are instant).  A table locked by another session for ``lock_timeout`` seconds is such a
    refusal (no stall watch runs here).
    """
    with connect(spec, "the scratch database") as conn:
        if lock_timeout:
            conn.execute(sql.SQL("SET lock_timeout = {}").format(int(lock_timeout * 1000)))
        if conn.execute("SELECT 1 FROM pg_class WHERE relkind = 'p' LIMIT 1").fetchone():
            return "tables kept logged (partitioned tables)"
        tables = [(str(r[0]), bool(r[1])) for r in conn.execute(UNLOGGABLE_SQL)]
        done: list[str] = []
        try:
            for table, uncompressed in tables:
                options: list[sql.Composable] = [sql.SQL("autovacuum_enabled = off")]
                if uncompressed:
                    options.append(
                        sql.SQL("toast_tuple_target = {}").format(sql.Literal(WHOLE_ROW_TARGET))
                    )
                conn.execute(
                    sql.SQL("ALTER TABLE {} SET UNLOGGED, SET ({})").format(
                        sql.SQL(table), sql.SQL(", ").join(options)
                    )
                )
                done.append(table)
        except psycopg.Error as exc:
            for table in done:
                conn.execute(sql.SQL("ALTER TABLE {} SET LOGGED").format(sql.SQL(table)))
            return f"tables kept logged ({describe(exc)})"
    whole = sum(uncompressed for _, uncompressed in tables)
    notes = [f"{len(done)} tables restored unlogged"] if done else []
    if whole:
        notes.append(f"{whole} kept whole in their rows (toast_tuple_target {WHOLE_ROW_TARGET})")
    return ", ".join(notes)
