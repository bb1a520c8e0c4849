"""The database shapes every benchmark measures on, built on a server from ``tests.pgservers``.

A result that holds for one shape only is not a result, so the benchmarks run on three:

* ``vectors`` -- pgbench data at ``scale`` plus a pgvector ``documents`` table (short text, a
  ``vector(384)`` embedding, an ivfflat index): the first benchmark's database;
* ``app`` -- an application database the way the strategy's projects look: pgbench data at
  ``scale`` (scale 30 is 3 million short rows), ``users`` (email, name, a ``jsonb`` profile,
  timestamps, a unique index), and ``documents`` with a foreign key to ``users``, a text body of
  a few hundred characters, a ``jsonb`` metadata column, a ``vector(384)`` embedding and an
  ivfflat index (about 1.2 GB at the defaults);
* ``one_table`` -- pgbench data at ``scale`` alone: almost all of it one big table
  (``pgbench_accounts``), where a parallel restore has nothing to share between its workers.

Every random value comes from ``setseed`` so two builds hold the same data.  Building the
1 GB shapes takes minutes, so :func:`cached_server` builds each (shape, sizes) once into
``/var/tmp/pgwarden-bench-cache`` and gives every later run a fresh copy of that data
directory on its own embedded PostgreSQL 18 (``PGWARDEN_BENCH_CACHE=0`` builds afresh).

    from benchmarks.shapes import Sizes, cached_server
    with cached_server("app", Sizes(scale=30)) as server:   # database "bench"
        ...
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.pgservers import PgServer, embedded_bin_dir, free_port, start_pg18, temp_base

#: the database every cached shape holds
DB = "bench"
CACHE = Path(os.environ.get("PGWARDEN_BENCH_CACHE_DIR", "/var/tmp/pgwarden-bench-cache"))

#: the tables each shape holds, for benchmarks that count them after a restore
PGBENCH_TABLES = ("pgbench_accounts", "pgbench_branches", "pgbench_history", "pgbench_tellers")


@dataclass(frozen=True)
class Sizes:
    scale: int = 30
    users: int = 200_000
    documents: int = 120_000


def pgbench_init(server: PgServer, db: str, scale: int) -> None:
    subprocess.run(
        [str(server.bin_dir / "pgbench"), "-i", "-q", "-s", str(scale), "-d", server.dsn(db)],
        check=True,
        capture_output=True,
    )


def _vector_sql(dims: int = 384) -> str:
    # one fresh random vector per row (the sub-select refers to the row so it is not cached)
    return f"(SELECT array_agg(random()::real) FROM generate_series(1, {dims}) WHERE g > 0)::vector"


def _ivfflat(server: PgServer, db: str, rows: int) -> None:
    lists = max(10, min(1000, rows // 1000))
    server.execute(
        "CREATE INDEX ON documents USING ivfflat (embedding vector_cosine_ops) "
        f"WITH (lists = {lists})",
        db,
    )


def build_vectors(server: PgServer, db: str, sizes: Sizes) -> None:
    pgbench_init(server, db, sizes.scale)
    server.execute("CREATE EXTENSION IF NOT EXISTS vector", db)
    server.execute(
        "CREATE TABLE documents (id serial PRIMARY KEY, content text, embedding vector(384))", db
    )
    server.execute(
        f"SELECT setseed(0.19); INSERT INTO documents (content, embedding) "
        f"SELECT 'doc ' || g, {_vector_sql()} FROM generate_series(1, {sizes.documents}) g",
        db,
    )
    _ivfflat(server, db, sizes.documents)


APP_SCHEMA = """
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE users (
    id bigserial PRIMARY KEY,
    email text NOT NULL UNIQUE,
    display_name text NOT NULL,
    profile jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    last_seen_at timestamptz
);
CREATE TABLE documents (
    id bigserial PRIMARY KEY,
    owner_id bigint NOT NULL REFERENCES users (id),
    title text NOT NULL,
    body text NOT NULL,
    metadata jsonb NOT NULL,
    embedding vector(384) NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX documents_owner_idx ON documents (owner_id);
"""

_WORDS = (
    "ARRAY['postgres','backup','restore','vector','index','query','table','replica',"
    "'pool','latency','storage','snapshot','schema','migration','tenant','invoice',"
    "'customer','order','search','embedding','cluster','metric','alert','deploy']"
)


def _sentence(words: int) -> str:
    """SQL for ``words`` random words from :data:`_WORDS`, joined by spaces."""
    return (
        f"(SELECT string_agg(({_WORDS})[1 + floor(random() * 24)::int], ' ') "
        f"FROM generate_series(1, {words}) WHERE g > 0)"
    )


def build_app(server: PgServer, db: str, sizes: Sizes) -> None:
    pgbench_init(server, db, sizes.scale)
    server.execute(APP_SCHEMA, db)
    server.execute(
        "SELECT setseed(0.19); "
        "INSERT INTO users (email, display_name, profile, created_at, last_seen_at) "
        "SELECT 'user' || g || '@example.' || (ARRAY['com','org','net','io'])[1 + g % 4], "
        f"initcap({_sentence(2)}), "
        "jsonb_build_object('plan', (ARRAY['free','pro','team'])[1 + g % 3], "
        "  'locale', (ARRAY['en','de','fr','es','pt'])[1 + g % 5], "
        "  'newsletter', g % 2 = 0, 'signup_source', 'campaign-' || (g % 37), "
        f"  'tags', to_jsonb(string_to_array({_sentence(3)}, ' '))), "
        "now() - random() * interval '900 days', "
        "CASE WHEN g % 5 = 0 THEN NULL ELSE now() - random() * interval '30 days' END "
        f"FROM generate_series(1, {sizes.users}) g",
        db,
    )
    server.execute(
        "SELECT setseed(0.23); "
        "INSERT INTO documents (owner_id, title, body, metadata, embedding, created_at) "
        f"SELECT 1 + (g * 7919) % {sizes.users}, initcap({_sentence(5)}), {_sentence(60)}, "
        "jsonb_build_object('source', (ARRAY['upload','import','api'])[1 + g % 3], "
        "  'language', (ARRAY['en','de','fr'])[1 + g % 3], 'version', 1 + g % 9, "
        "  'labels', jsonb_build_array('l' || g % 11, 'l' || g % 13), "
        "  'checksum', md5(g::text)), "
        f"{_vector_sql()}, now() - random() * interval '400 days' "
        f"FROM generate_series(1, {sizes.documents}) g",
        db,
    )
    _ivfflat(server, db, sizes.documents)


def build_one_table(server: PgServer, db: str, sizes: Sizes) -> None:
    pgbench_init(server, db, sizes.scale)


SHAPES: dict[str, Callable[[PgServer, str, Sizes], None]] = {
    "vectors": build_vectors,
    "app": build_app,
    "one_table": build_one_table,
}

#: the user tables of each shape
TABLES: dict[str, tuple[str, ...]] = {
    "vectors": (*PGBENCH_TABLES, "documents"),
    "app": (*PGBENCH_TABLES, "users", "documents"),
    "one_table": PGBENCH_TABLES,
}


def build(server: PgServer, db: str, shape: str, sizes: Sizes | None = None) -> None:
    """Create ``db`` on ``server`` holding ``shape`` at ``sizes``, vacuumed and analyzed."""
    server.create_database(db)
    SHAPES[shape](server, db, sizes or Sizes())
    server.execute("VACUUM ANALYZE", db)


@contextmanager
def cached_server(shape: str, sizes: Sizes | None = None) -> Iterator[PgServer]:
    """A running embedded PostgreSQL 18 whose database :data:`DB` holds ``shape``: a copy of
    the cached data directory (built on first use), stopped and removed on exit."""
    sizes = sizes or Sizes()
    base = temp_base(f"pgwarden-bench-{shape}-")
    server: PgServer | None = None
    try:
        if os.environ.get("PGWARDEN_BENCH_CACHE") == "0":
            server = start_pg18(base)
            build(server, DB, shape, sizes)
        else:
            server = _from_cache(shape, sizes, base)
        yield server
    finally:
        if server is not None and server.is_running():
            server.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)


def _from_cache(shape: str, sizes: Sizes, base: Path) -> PgServer:
    key = f"{shape}-s{sizes.scale}-u{sizes.users}-d{sizes.documents}"
    cached = CACHE / key / "data"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder; the others wait and copy
        if not cached.exists():
            print(f"building shape {key} (cached in {CACHE} for later runs)", flush=True)
            builder = start_pg18(temp_base(f"pgwarden-bench-build-{shape}-"))
            try:
                build(builder, DB, shape, sizes)
                builder.execute("CHECKPOINT")
            finally:
                builder.stop("fast")
            staging = CACHE / key / "data.partial"
            staging.parent.mkdir(exist_ok=True)
            shutil.rmtree(staging, ignore_errors=True)
            subprocess.run(["cp", "-a", str(builder.datadir), str(staging)], check=True)
            staging.rename(cached)
            shutil.rmtree(builder.socket_dir, ignore_errors=True)
    subprocess.run(["cp", "-a", str(cached), str(base / "data")], check=True)
    run_as = "embedded_postgres"
    shutil.chown(base, run_as, run_as)
    base.chmod(0o755)
    (base / "data" / "postmaster.pid").unlink(missing_ok=True)
    server = PgServer(
        18, embedded_bin_dir(), base / "data", base, free_port(), run_as, base / "server.log"
    )
    server.start()
    return server
