"""Deterministic sample databases for the tests, and the fingerprints that compare them.

Builders:

- ``make_sample_db``: the strategy's application shape -- a ``users`` table (the restore drill's
  ``SELECT COUNT(*) FROM users``) and ``documents(id serial primary key, content text,
  embedding vector(384))`` with an ivfflat (``vector_cosine_ops``) or HNSW index, created after
  the rows are loaded as pgvector wants.  ``vectors=False`` leaves out the embedding column (and
  the extension), for servers without pgvector such as Debian's PostgreSQL 15.
- ``make_rich_db``: the same plus everything a backup round trip can lose: jsonb, arrays, bytea,
  numeric, floats with NaN/Infinity, timestamptz, interval, uuid, inet, an enum, a domain, text
  with tabs/newlines/backslashes/unicode, large objects, sequences with unusual settings and
  values, a second schema (with a table whose name needs quoting, and another ``users``), a
  view, SQL and PL/pgSQL functions, a trigger, a materialized view, a generated column, an
  unlogged table, a partitioned table, extension objects (citext, pg_trgm).

Comparers (all read with ``TimeZone=UTC`` and fixed output styles so that two servers agree):

- ``table_fingerprints``: per table ``(row count, md5 of the rows' text sorted in "C" order)``;
- ``sequence_values``: every sequence's state and settings;
- ``large_object_digest``: ``{oid: md5}`` of every large object;
- ``object_inventory``: the schema objects (relations, indexes, functions, types, extensions).

Everything derives from ``seed``: the same arguments give the same fingerprints on any server.
"""

from __future__ import annotations

import hashlib
import math
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Literal

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from tests.pgservers import PgServer

VectorIndex = Literal["ivfflat", "hnsw", "none"]

EMBEDDING_DIM = 384
BASE_TIME = datetime(2025, 1, 1, tzinfo=UTC)

# settings under which every comparer reads, so text forms do not depend on the server's defaults
_STABLE_SESSION = (
    "SET TimeZone = 'UTC'",
    "SET DateStyle = 'ISO, MDY'",
    "SET IntervalStyle = 'postgres'",
    "SET extra_float_digits = 1",
    "SET bytea_output = 'hex'",
)

_WORDS = (
    "backup",
    "restore",
    "vector",
    "index",
    "replica",
    "snapshot",
    "checksum",
    "manifest",
    "retention",
    "pool",
    "tenant",
    "invoice",
    "order",
    "customer",
    "search",
    "embedding",
    "migration",
    "schema",
    "table",
    "query",
    "cache",
    "latency",
    "throughput",
    "archive",
    "partition",
    "sequence",
    "trigger",
    "function",
    "view",
    "column",
    "constraint",
)
_FIRST = ("Ada", "Grace", "Linus", "Margaret", "Ken", "Barbara", "Edsger", "Frances", "Tom", "Léa")
_LAST = ("Lovelace", "Hopper", "Torvalds", "Hamilton", "Thompson", "Liskov", "Dijkstra", "Allen")
# awkward strings that COPY, pg_dump and psql must all carry unchanged
_AWKWARD = (
    "tab\there",
    "new\nline",
    "back\\slash",
    "quote ' and \" both",
    "unicode: żółć 日本語 😀",
    "",
    "\\N is not null",
    "carriage\rreturn",
)


def ivfflat_lists(rows: int) -> int:
    """pgvector's guidance: rows / 1000 up to 1M rows, sqrt(rows) beyond (at least 1)."""
    if rows > 1_000_000:
        return math.isqrt(rows)
    return max(1, rows // 1000)


def _connect(server: PgServer, dbname: str) -> psycopg.Connection[tuple[object, ...]]:
    conn = server.connect(dbname)
    for stmt in _STABLE_SESSION:
        conn.execute(stmt)
    return conn


def _has_extension(conn: psycopg.Connection[tuple[object, ...]], name: str) -> bool:
    row = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = %s", (name,)).fetchone()
    return row is not None


def _sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(words)).capitalize() + "."


def _vector_text(rng: random.Random, dim: int) -> str:
    return "[" + ",".join(f"{rng.uniform(-1, 1):.6f}" for _ in range(dim)) + "]"


def _create_core(
    conn: psycopg.Connection[tuple[object, ...]],
    rng: random.Random,
    *,
    rows: int,
    vectors: bool,
    index: VectorIndex,
    lists: int | None,
    dim: int,
) -> None:
    if vectors:
        if not _has_extension(conn, "vector"):
            raise RuntimeError(
                "pgvector is not available on this server; use vectors=False "
                "(Debian 12 ships no pgvector for PostgreSQL 15)"
            )
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    conn.execute(
        """
        CREATE TABLE users (
            id serial PRIMARY KEY,
            email text NOT NULL UNIQUE,
            display_name text NOT NULL,
            created_at timestamptz NOT NULL,
            is_active boolean NOT NULL DEFAULT true
        )
        """
    )
    embedding = (
        sql.SQL(", embedding vector({})").format(sql.Literal(dim)) if vectors else sql.SQL("")
    )
    conn.execute(
        sql.SQL(
            "CREATE TABLE documents (id serial PRIMARY KEY,"
            " user_id integer REFERENCES users (id), content text{})"
        ).format(embedding)
    )
    conn.execute("CREATE INDEX documents_user_id_idx ON documents (user_id)")
    with conn.cursor().copy(
        "COPY users (email, display_name, created_at, is_active) FROM STDIN"
    ) as copy:
        for i in range(1, rows + 1):
            name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
            created = BASE_TIME + timedelta(seconds=rng.randrange(365 * 86400))
            copy.write_row((f"user{i:06d}@example.com", name, created, rng.random() > 0.1))
    columns = "user_id, content, embedding" if vectors else "user_id, content"
    with conn.cursor().copy(f"COPY documents ({columns}) FROM STDIN") as copy:
        for _ in range(rows):
            record: tuple[object, ...] = (
                rng.randint(1, rows) if rows else None,
                _sentence(rng, rng.randint(4, 16)),
            )
            if vectors:
                record += (_vector_text(rng, dim),)
            copy.write_row(record)
    if vectors and index == "ivfflat":
        conn.execute(
            sql.SQL(
                "CREATE INDEX documents_embedding_idx ON documents"
                " USING ivfflat (embedding vector_cosine_ops) WITH (lists = {})"
            ).format(sql.Literal(lists if lists is not None else ivfflat_lists(rows)))
        )
    elif vectors and index == "hnsw":
        conn.execute(
            "CREATE INDEX documents_embedding_idx ON documents"
            " USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
        )
    conn.execute("ANALYZE")


def make_sample_db(
    server: PgServer,
    name: str,
    *,
    rows: int = 1000,
    vectors: bool = True,
    index: VectorIndex = "ivfflat",
    lists: int | None = None,
    dim: int = EMBEDDING_DIM,
    seed: int = 0,
) -> str:
    """(Re)create database ``name`` with ``users`` and ``documents``; return its DSN.

    ``rows`` users and ``rows`` documents.  The ivfflat index uses ``lists`` (the strategy's
    value is 100), by default ``ivfflat_lists(rows)``; it is built after the data is loaded.
    """
    dsn = server.create_database(name)
    rng = random.Random(seed)
    with server.connect(name) as conn:
        _create_core(conn, rng, rows=rows, vectors=vectors, index=index, lists=lists, dim=dim)
    return dsn


# -- the rich database ---------------------------------------------------------------------------

LARGE_OBJECT_BASE_OID = 770_000

#: sequences whose state make_rich_db sets explicitly: name -> (last_value, is_called)
RICH_SEQUENCES: dict[str, tuple[int, bool]] = {
    "public.invoice_no": (123_457, True),
    "public.ticket_no": (42, False),
    "archive.countdown": (-999, True),
}


def large_object_payload(index: int, seed: int = 0) -> bytes:
    """The bytes of the ``index``-th large object of ``make_rich_db(seed=seed)``."""
    rng = random.Random(f"lo-{seed}-{index}")
    size = (0, 1, 100, 4096, 70_000)[index % 5]  # empty, tiny, and beyond one 2 KiB LO page
    return rng.randbytes(size)


_RICH_DDL = """
CREATE EXTENSION IF NOT EXISTS citext;
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN positive_amount AS numeric(14, 2) CHECK (VALUE > 0);
CREATE TABLE everything (
    id bigserial PRIMARY KEY,
    doc jsonb,
    tags text[],
    matrix integer[][],
    blob bytea,
    amount numeric(20, 6),
    huge numeric,
    ratio double precision,
    small real,
    at timestamptz,
    day date,
    span interval,
    uid uuid UNIQUE,
    feeling mood,
    addr inet,
    email citext,
    note text,
    flag boolean
);
COMMENT ON TABLE everything IS 'one column per type a dump must carry';
CREATE INDEX everything_note_trgm ON everything USING gin (note gin_trgm_ops);
CREATE TABLE line_items (
    id serial PRIMARY KEY,
    qty integer NOT NULL,
    unit_price positive_amount NOT NULL,
    total numeric GENERATED ALWAYS AS (qty * unit_price) STORED,
    updated_at timestamptz
);
CREATE UNLOGGED TABLE session_cache (key text PRIMARY KEY, value jsonb, expires timestamptz);
CREATE TABLE events (id bigint NOT NULL, at timestamptz NOT NULL, kind text)
    PARTITION BY RANGE (at);
CREATE TABLE events_2025h1 PARTITION OF events
    FOR VALUES FROM ('2025-01-01 00:00+00') TO ('2025-07-01 00:00+00');
CREATE TABLE events_2025h2 PARTITION OF events
    FOR VALUES FROM ('2025-07-01 00:00+00') TO ('2026-01-01 00:00+00');
CREATE TABLE attachments (id serial PRIMARY KEY, filename text NOT NULL, content oid NOT NULL);
CREATE SEQUENCE invoice_no INCREMENT BY 7 MINVALUE 1000 MAXVALUE 9999999 START 1000 CACHE 1;
CREATE SEQUENCE ticket_no;
SELECT setval('invoice_no', 123457, true);
SELECT setval('ticket_no', 42, false);

CREATE SCHEMA archive;
CREATE SEQUENCE archive.countdown INCREMENT BY -3 MINVALUE -1000000 MAXVALUE -1 START -1 CYCLE;
SELECT setval('archive.countdown', -999, true);
CREATE TABLE archive.users (id integer PRIMARY KEY, email text, archived_at timestamptz);
CREATE TABLE archive."Order Notes" ("Order Id" integer, "Note" text, "Amount" numeric(10, 2));

CREATE VIEW active_users AS SELECT id, email, display_name FROM users WHERE is_active;
CREATE FUNCTION archive.order_total(n integer) RETURNS numeric
    LANGUAGE sql STABLE
    AS $$ SELECT coalesce(sum("Amount"), 0) FROM archive."Order Notes" WHERE "Order Id" = n $$;
CREATE FUNCTION touch_updated_at() RETURNS trigger
    LANGUAGE plpgsql
    AS $$ BEGIN NEW.updated_at := '2025-06-01 12:00+00'; RETURN NEW; END $$;
CREATE TRIGGER line_items_touch BEFORE INSERT OR UPDATE ON line_items
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
"""

_RICH_AFTER_DATA = """
CREATE MATERIALIZED VIEW user_stats AS
    SELECT u.id AS user_id, count(d.id) AS documents, max(length(d.content)) AS longest
    FROM users u LEFT JOIN documents d ON d.user_id = u.id
    GROUP BY u.id
WITH DATA;
CREATE UNIQUE INDEX user_stats_user_id ON user_stats (user_id);
ANALYZE;
"""


def _everything_row(rng: random.Random, i: int) -> tuple[object, ...]:
    def maybe(value: object) -> object:
        return None if rng.random() < 0.08 else value

    ratio = rng.choice([rng.uniform(-1e6, 1e6), math.nan, math.inf, -math.inf, -0.0, 1e-300])
    return (
        maybe(
            Jsonb({"n": i, "nested": {"list": [1, "two", None, True]}, "s": rng.choice(_AWKWARD)})
        ),
        maybe([rng.choice(_WORDS) for _ in range(rng.randint(0, 4))] + [rng.choice(_AWKWARD)]),
        maybe([[rng.randint(-9, 9) for _ in range(3)] for _ in range(2)]),
        maybe(rng.randbytes(rng.randint(0, 64))),
        maybe(Decimal(rng.randint(-(10**12), 10**12)) / Decimal(10**6)),
        maybe(rng.choice([Decimal("NaN"), Decimal(10) ** 40 + 1, Decimal("-0.000000000001")])),
        maybe(ratio),
        maybe(rng.uniform(-1000, 1000)),
        maybe(BASE_TIME + timedelta(microseconds=rng.randrange(10**14))),
        maybe((BASE_TIME + timedelta(days=rng.randrange(-30000, 3000))).date()),
        maybe(timedelta(days=rng.randrange(400), seconds=rng.randrange(86400))),
        uuid.UUID(int=rng.getrandbits(128), version=4),
        maybe(rng.choice(["sad", "ok", "happy"])),
        maybe(f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"),
        maybe(f"User{i}@Example.COM"),
        maybe(rng.choice(_AWKWARD) + " " + _sentence(rng, 5)),
        maybe(rng.random() < 0.5),
    )


def make_rich_db(
    server: PgServer,
    name: str,
    *,
    rows: int = 200,
    vectors: bool = True,
    index: VectorIndex = "hnsw",
    large_objects: int = 5,
    seed: int = 0,
) -> str:
    """(Re)create ``name`` with the sample tables plus every kind of object listed above.

    Large objects get fixed OIDs (``LARGE_OBJECT_BASE_OID + i``) and the bytes of
    ``large_object_payload(i, seed)``; ``attachments`` refers to them.
    """
    dsn = server.create_database(name)
    rng = random.Random(seed)
    with server.connect(name) as conn:
        _create_core(
            conn, rng, rows=rows, vectors=vectors, index=index, lists=None, dim=EMBEDDING_DIM
        )
        conn.execute(_RICH_DDL)  # no parameters: sent as one multi-statement script
        cur = conn.cursor()
        with cur.copy(
            "COPY everything (doc, tags, matrix, blob, amount, huge, ratio, small, at, day, span,"
            " uid, feeling, addr, email, note, flag) FROM STDIN"
        ) as copy:
            for i in range(rows):
                copy.write_row(_everything_row(rng, i))
        cur.executemany(
            "INSERT INTO line_items (qty, unit_price) VALUES (%s, %s)",
            [(rng.randint(1, 50), Decimal(rng.randint(1, 99_999)) / 100) for _ in range(rows)],
        )
        with cur.copy("COPY session_cache (key, value, expires) FROM STDIN") as copy:
            for i in range(rows // 4):
                expires = BASE_TIME + timedelta(hours=i)
                copy.write_row((f"sess:{i:05d}", Jsonb({"user": i, "ttl": 3600}), expires))
        with cur.copy("COPY events (id, at, kind) FROM STDIN") as copy:
            for i in range(rows):
                at = BASE_TIME + timedelta(seconds=rng.randrange(365 * 86400))
                copy.write_row((i, at, rng.choice(["login", "logout", "backup", "restore"])))
        with cur.copy("COPY archive.users (id, email, archived_at) FROM STDIN") as copy:
            for i in range(1, rows // 2 + 1):
                copy.write_row((i, f"old{i}@example.org", BASE_TIME - timedelta(days=i)))
        notes = 'COPY archive."Order Notes" ("Order Id", "Note", "Amount") FROM STDIN'
        with cur.copy(notes) as copy:
            for i in range(rows):
                amount = Decimal(rng.randint(0, 1_000_000)) / 100
                copy.write_row((i % 37, rng.choice(_AWKWARD), amount))
        for i in range(large_objects):
            oid = LARGE_OBJECT_BASE_OID + i
            cur.execute("SELECT lo_from_bytea(%s, %s)", (oid, large_object_payload(i, seed)))
            cur.execute(
                "INSERT INTO attachments (filename, content) VALUES (%s, %s)",
                (f"file-{i}.bin", oid),
            )
        conn.execute(_RICH_AFTER_DATA)
    return dsn


# -- comparers -----------------------------------------------------------------------------------

_USER_SCHEMAS = """
    n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
    AND n.nspname NOT LIKE 'pg\\_temp\\_%' AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%'
"""


def _qualified(schema: str, name: str) -> str:
    return f"{schema}.{name}"


def table_fingerprints(server: PgServer, dbname: str) -> dict[str, tuple[int, str]]:
    """``{"schema.table": (rows, md5)}`` for every table and materialized view in user schemas.

    Tables are ordinary and unlogged tables and partitions (a partitioned parent is left out,
    its rows are its partitions'); extension-owned tables are left out.  The md5 is over
    ``string_agg(t::text, ',' ORDER BY t::text COLLATE "C")``, with '' for an empty table.
    """
    with _connect(server, dbname) as conn:
        relations = conn.execute(
            f"""
            SELECT n.nspname, c.relname
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'm') AND {_USER_SCHEMAS}
              AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                              AND d.objid = c.oid AND d.deptype = 'e')
            ORDER BY 1, 2
            """
        ).fetchall()
        result: dict[str, tuple[int, str]] = {}
        for schema, table in relations:
            query = sql.SQL(
                "SELECT count(*), md5(coalesce(string_agg(t::text, ',' ORDER BY t::text"
                " COLLATE \"C\"), '')) FROM {} AS t"
            ).format(sql.Identifier(str(schema), str(table)))
            row = conn.execute(query).fetchone()
            assert row is not None
            result[_qualified(str(schema), str(table))] = (int(row[0]), str(row[1]))  # type: ignore[call-overload]
        return result


@dataclass(frozen=True)
class SequenceState:
    """What a restore must reproduce of a sequence: its position and its settings."""

    last_value: int
    is_called: bool
    increment: int
    min_value: int
    max_value: int
    start_value: int
    cycle: bool


def sequence_values(server: PgServer, dbname: str) -> dict[str, SequenceState]:
    """``{"schema.sequence": SequenceState}`` for every sequence in user schemas."""
    with _connect(server, dbname) as conn:
        sequences = conn.execute(
            """
            SELECT schemaname, sequencename, increment_by, min_value, max_value, start_value,
                   cycle
            FROM pg_sequences ORDER BY 1, 2
            """
        ).fetchall()
        result: dict[str, SequenceState] = {}
        for schema, name, increment, min_value, max_value, start, cycle in sequences:
            query = sql.SQL("SELECT last_value, is_called FROM {}").format(
                sql.Identifier(str(schema), str(name))
            )
            row = conn.execute(query).fetchone()
            assert row is not None
            result[_qualified(str(schema), str(name))] = SequenceState(
                last_value=int(row[0]),  # type: ignore[call-overload]
                is_called=bool(row[1]),
                increment=int(increment),  # type: ignore[call-overload]
                min_value=int(min_value),  # type: ignore[call-overload]
                max_value=int(max_value),  # type: ignore[call-overload]
                start_value=int(start),  # type: ignore[call-overload]
                cycle=bool(cycle),
            )
        return result


def large_object_digest(server: PgServer, dbname: str) -> dict[int, str]:
    """``{oid: md5 of its bytes}`` for every large object in the database."""
    with _connect(server, dbname) as conn:
        rows = conn.execute(
            "SELECT oid::bigint, md5(lo_get(oid)) FROM pg_largeobject_metadata ORDER BY oid"
        ).fetchall()
    return {int(oid): str(digest) for oid, digest in rows}  # type: ignore[call-overload]


def md5_hex(data: bytes) -> str:
    """What ``md5(bytea)`` returns, for comparing with ``large_object_payload``."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def object_inventory(server: PgServer, dbname: str) -> list[tuple[str, str]]:
    """Sorted ``(kind, "schema.name[...]")`` of the user-visible schema objects.

    Relations by kind (table, view, materialized view, index, sequence, partitioned table),
    functions with their argument types, types (enums, domains), triggers, extensions and
    their versions, schemas.  Objects belonging to an extension are left out.
    """
    with _connect(server, dbname) as conn:
        rows = conn.execute(
            f"""
            SELECT CASE c.relkind WHEN 'r' THEN CASE c.relpersistence WHEN 'u' THEN 'unlogged table'
                                                     ELSE 'table' END
                                  WHEN 'p' THEN 'partitioned table' WHEN 'v' THEN 'view'
                                  WHEN 'm' THEN 'materialized view' WHEN 'i' THEN 'index'
                                  WHEN 'I' THEN 'partitioned index' WHEN 'S' THEN 'sequence'
                                  ELSE c.relkind::text END,
                   n.nspname || '.' || c.relname
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p', 'v', 'm', 'i', 'I', 'S') AND {_USER_SCHEMAS}
              AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                              AND d.objid = c.oid AND d.deptype = 'e')
            UNION ALL
            SELECT 'function',
                   n.nspname || '.' || p.proname
                   || '(' || pg_get_function_identity_arguments(p.oid) || ')'
            FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE {_USER_SCHEMAS}
              AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                              AND d.objid = p.oid AND d.deptype = 'e')
            UNION ALL
            SELECT CASE t.typtype WHEN 'e' THEN 'enum' WHEN 'd' THEN 'domain' ELSE 'type' END
                   || CASE t.typtype WHEN 'e' THEN ' ' || (
                          SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
                          FROM pg_enum e WHERE e.enumtypid = t.oid) ELSE '' END,
                   n.nspname || '.' || t.typname
            FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
            WHERE t.typtype IN ('e', 'd') AND {_USER_SCHEMAS}
              AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_type'::regclass
                              AND d.objid = t.oid AND d.deptype = 'e')
            UNION ALL
            SELECT 'trigger', n.nspname || '.' || c.relname || '.' || tg.tgname
            FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE NOT tg.tgisinternal
            UNION ALL
            SELECT 'extension', extname || ' ' || extversion FROM pg_extension
            UNION ALL
            SELECT 'schema', n.nspname FROM pg_namespace n
            WHERE {_USER_SCHEMAS}
            """
        ).fetchall()
    return sorted((str(kind), str(name)) for kind, name in rows)


def nearest_documents(server: PgServer, dbname: str, doc_id: int, k: int = 5) -> list[int]:
    """The ``k`` documents closest (cosine) to document ``doc_id``, computed exactly.

    Index scans are disabled so the answer does not depend on an approximate index; ties are
    broken by id.  Useful as a pgvector probe that must give the same answer after a restore.
    """
    with _connect(server, dbname) as conn, conn.transaction():
        conn.execute("SET LOCAL enable_indexscan = off")
        rows = conn.execute(
            """
            SELECT d.id FROM documents d,
                   (SELECT embedding FROM documents WHERE id = %(id)s) AS q
            WHERE d.id <> %(id)s
            ORDER BY d.embedding <=> q.embedding, d.id
            LIMIT %(k)s
            """,
            {"id": doc_id, "k": k},
        ).fetchall()
    return [int(r[0]) for r in rows]  # type: ignore[call-overload]
