"""A drill's scratch tables before the data loads (:mod:`pgwarden.restore.scratchtables`):
unlogged and without autovacuum; rows holding a never-compressed column (a pgvector vector)
kept whole instead of TOASTed, with the same values read back."""

from __future__ import annotations

from pgwarden.pg.conninfo import ConnSpec
from pgwarden.restore.scratchtables import WHOLE_ROW_TARGET, prepare_tables
from tests.pgservers import PgServer

SCHEMA = """
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE docs (id int PRIMARY KEY, body text, embedding vector(384));
CREATE TABLE docs_default (LIKE docs INCLUDING ALL);
CREATE TABLE notes (id int PRIMARY KEY, body text);
"""

#: ~2.1 kB rows: a 1.5 kB vector and 512 characters of text that pglz cannot shrink
ROWS = """
INSERT INTO {table}
SELECT g, (SELECT string_agg(md5((g * 100 + i)::text), '') FROM generate_series(1, 16) i
           WHERE g > 0),
       (SELECT array_agg(((g * 7 + i) % 1000) / 1000.0)::real[] FROM generate_series(1, 384) i
        WHERE g > 0)::vector
FROM generate_series(1, 200) g
"""


def _options(server: PgServer, db: str, table: str) -> tuple[str, list[str]]:
    row = server.execute(
        f"SELECT relpersistence::text, coalesce(reloptions, '{{}}') FROM pg_class "
        f"WHERE oid = '{table}'::regclass",
        db,
    )[0]
    return str(row[0]), sorted(row[1])  # type: ignore[arg-type]


def _toast_bytes(server: PgServer, db: str, table: str) -> int:
    row = server.execute(
        f"SELECT pg_relation_size(reltoastrelid) FROM pg_class WHERE oid = '{table}'::regclass", db
    )[0]
    return int(row[0])  # type: ignore[call-overload]


def test_vector_rows_stay_whole_and_the_tables_unlogged(pg18: PgServer) -> None:
    db = "scratch_tables"
    pg18.create_database(db)
    pg18.execute(SCHEMA, db)
    prepare_db = "scratch_tables_prepared"
    pg18.create_database(prepare_db)
    pg18.execute(
        SCHEMA.replace("CREATE TABLE docs_default (LIKE docs INCLUDING ALL);", ""), prepare_db
    )

    said = prepare_tables(ConnSpec(pg18.dsn(prepare_db)))

    assert (
        said
        == f"2 tables restored unlogged, 1 kept whole in their rows (toast_tuple_target {WHOLE_ROW_TARGET})"
    )
    assert _options(pg18, prepare_db, "docs") == (
        "u",
        ["autovacuum_enabled=off", f"toast_tuple_target={WHOLE_ROW_TARGET}"],
    )
    assert _options(pg18, prepare_db, "notes") == ("u", ["autovacuum_enabled=off"])

    # the same rows: TOASTed in a table as pg_restore creates it, whole in a prepared one
    pg18.execute(ROWS.format(table="docs_default"), db)
    pg18.execute(ROWS.format(table="docs"), prepare_db)
    assert _toast_bytes(pg18, db, "docs_default") > 0
    assert _toast_bytes(pg18, prepare_db, "docs") == 0
    digest = "SELECT md5(string_agg(id || body || embedding::text, ',' ORDER BY id)) FROM {}"
    assert pg18.execute(digest.format("docs"), prepare_db) == pg18.execute(
        digest.format("docs_default"), db
    )


def test_partitioned_schemas_stay_logged(pg18: PgServer) -> None:
    db = "scratch_tables_partitioned"
    pg18.create_database(db)
    pg18.execute(
        "CREATE TABLE events (at date, v int) PARTITION BY RANGE (at);"
        "CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');"
        "CREATE TABLE plain (id int)",
        db,
    )
    assert prepare_tables(ConnSpec(pg18.dsn(db))) == "tables kept logged (partitioned tables)"
    assert _options(pg18, db, "plain") == ("p", [])
