"""Snapshot facts on a real server: the probe rows of a big table come from a page sample, and
a probe finds the same neighbours as a brute-force search in Python."""

from __future__ import annotations

import psycopg

from pgwarden.backup import facts
from pgwarden.pg import introspect
from tests.pgservers import PgServer
from tests.sampledata import make_sample_db

ROWS = facts.SAMPLE_ABOVE_ROWS + 5000


def test_probe_rows_of_a_big_table_come_from_a_repeatable_sample(pg18: PgServer) -> None:
    make_sample_db(pg18, "facts_big", rows=ROWS, dim=8)
    pg18.execute("ANALYZE documents", "facts_big")  # reltuples: how big the table is
    with psycopg.connect(pg18.dsn("facts_big")) as conn:
        first = facts._probe_keys(conn, "public", "documents", "embedding", "id", 3)
        again = facts._probe_keys(conn, "public", "documents", "embedding", "id", 3)
    assert len(first) == 3 and len(set(first)) == 3
    assert first == again  # REPEATABLE: the same rows for the same data
    ids = {str(r[0]) for r in pg18.execute("SELECT id FROM documents", "facts_big")}
    assert set(first) <= ids


def test_a_probe_returns_the_exact_nearest_neighbours(pg18: PgServer) -> None:
    make_sample_db(pg18, "facts_probe", rows=2000, dim=8)
    key = 17
    with psycopg.connect(pg18.dsn("facts_probe")) as conn, conn.transaction():
        found = introspect.probe_neighbours(
            conn, "public", "documents", "embedding", "id", str(key), 10
        )
        gone = introspect.probe_neighbours(conn, "public", "documents", "embedding", "id", "-1", 10)
    # the same order from a brute-force sort of every distance (no LIMIT, no index)
    brute = pg18.execute(
        "SELECT id FROM (SELECT id, embedding <-> (SELECT embedding FROM documents "
        f"WHERE id = {key}) AS d FROM documents) s ORDER BY d, id",
        "facts_probe",
    )
    assert found is not None
    assert [int(i) for i in found] == [int(str(r[0])) for r in brute[:10]]
    assert found[0] == str(key)  # its own nearest neighbour
    assert gone is None


def test_facts_run_without_parallel_workers(pg18: PgServer) -> None:
    """Counts and probes take no parallel workers: they would compete with pg_dump's backend
    for the server's cores, and the facts have the dump's whole run to finish anyway."""
    make_sample_db(pg18, "facts_serial", rows=300, dim=4)
    conn = psycopg.connect(pg18.dsn("facts_serial"), autocommit=True)
    session = facts.SnapshotSession(conn)
    try:
        found = session.collect(mode="exact", exact_max_bytes=1 << 30, probes=2, probe_k=3)
        setting = conn.execute("SHOW max_parallel_workers_per_gather").fetchone()
    finally:
        session.close()
    assert setting is not None and setting[0] == "0"
    assert [t.rows for t in found.tables if t.table == "documents"] == [300]
    assert len(found.vector_probes) == 2


def test_probes_in_one_scan_answer_as_each_probe_alone(pg18: PgServer) -> None:
    """The backup's one-scan probes give what a drill's one-by-one probes give: the same ids
    in the same order, ties broken by key, a row that is gone answered None."""
    make_sample_db(pg18, "facts_many", rows=1500, dim=8)
    pg18.execute(  # two copies of row 17's vector: ties at distance 0
        "UPDATE documents SET embedding = (SELECT embedding FROM documents WHERE id = 17) "
        "WHERE id IN (900, 40)",
        "facts_many",
    )
    keys = ["17", "1200", "-1"]
    with psycopg.connect(pg18.dsn("facts_many")) as conn, conn.transaction():
        many = introspect.probe_neighbours_many(
            conn, "public", "documents", "embedding", "id", keys, 6
        )
        alone = {
            key: introspect.probe_neighbours(conn, "public", "documents", "embedding", "id", key, 6)
            for key in keys
        }
    assert many == alone
    assert many["17"] is not None and many["17"][:3] == ("17", "40", "900")
    assert many["-1"] is None
