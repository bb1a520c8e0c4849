"""The sample-data builders and comparers, checked on both servers and through real dumps."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psycopg
import pytest

from tests.pgservers import PgServer
from tests.sampledata import (
    LARGE_OBJECT_BASE_OID,
    RICH_SEQUENCES,
    ivfflat_lists,
    large_object_digest,
    large_object_payload,
    make_rich_db,
    make_sample_db,
    md5_hex,
    nearest_documents,
    object_inventory,
    sequence_values,
    table_fingerprints,
)


def _index_defs(server: PgServer, db: str) -> dict[str, str]:
    rows = server.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'documents'", db
    )
    return {str(name): str(definition) for name, definition in rows}


def _snapshot(server: PgServer, db: str) -> tuple[object, ...]:
    return (
        table_fingerprints(server, db),
        sequence_values(server, db),
        large_object_digest(server, db),
    )


def test_sample_db_has_the_strategy_tables(pg18: PgServer) -> None:
    dsn = make_sample_db(pg18, "sd_sample", rows=1000)
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT COUNT(*) FROM users").fetchone() == (1000,)
        assert conn.execute("SELECT COUNT(*) FROM documents").fetchone() == (1000,)
        dims = conn.execute("SELECT DISTINCT vector_dims(embedding) FROM documents").fetchall()
        assert dims == [(384,)]
        orphans = conn.execute(
            "SELECT count(*) FROM documents d LEFT JOIN users u ON u.id = d.user_id"
            " WHERE u.id IS NULL"
        ).fetchone()
        assert orphans == (0,)
    index = _index_defs(pg18, "sd_sample")["documents_embedding_idx"]
    assert "USING ivfflat (embedding vector_cosine_ops)" in index
    assert f"lists='{ivfflat_lists(1000)}'" in index


def test_sample_db_index_variants(pg18: PgServer) -> None:
    make_sample_db(pg18, "sd_lists100", rows=300, lists=100, dim=8)
    assert "WITH (lists='100')" in _index_defs(pg18, "sd_lists100")["documents_embedding_idx"]
    make_sample_db(pg18, "sd_hnsw", rows=300, index="hnsw", dim=8)
    assert (
        "USING hnsw (embedding vector_cosine_ops)"
        in _index_defs(pg18, "sd_hnsw")["documents_embedding_idx"]
    )
    make_sample_db(pg18, "sd_noindex", rows=10, index="none", dim=8)
    assert "documents_embedding_idx" not in _index_defs(pg18, "sd_noindex")
    for db in ("sd_lists100", "sd_hnsw", "sd_noindex"):
        pg18.drop_database(db)


def test_ivfflat_lists_follow_pgvector_guidance() -> None:
    assert ivfflat_lists(0) == 1
    assert ivfflat_lists(1000) == 1
    assert ivfflat_lists(100_000) == 100
    assert ivfflat_lists(4_000_000) == 2000


def test_same_seed_same_data_other_seed_other_data(pg18: PgServer) -> None:
    make_sample_db(pg18, "sd_seed_a", rows=200, dim=16)
    make_sample_db(pg18, "sd_seed_b", rows=200, dim=16)
    make_sample_db(pg18, "sd_seed_c", rows=200, dim=16, seed=1)
    a = table_fingerprints(pg18, "sd_seed_a")
    assert set(a) == {"public.users", "public.documents"}
    assert a == table_fingerprints(pg18, "sd_seed_b")
    c = table_fingerprints(pg18, "sd_seed_c")
    assert c["public.users"][0] == a["public.users"][0]
    assert c["public.users"][1] != a["public.users"][1]
    for db in ("sd_seed_a", "sd_seed_b", "sd_seed_c"):
        pg18.drop_database(db)


def test_pg15_without_vectors(pg15: PgServer) -> None:
    make_sample_db(pg15, "sd_novec", rows=50, vectors=False)
    columns = pg15.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'documents'"
        " ORDER BY ordinal_position",
        "sd_novec",
    )
    assert [c[0] for c in columns] == ["id", "user_id", "content"]
    assert pg15.execute("SELECT COUNT(*) FROM users", "sd_novec") == [(50,)]
    with pytest.raises(RuntimeError, match="vectors=False"):
        make_sample_db(pg15, "sd_novec", rows=5)


def test_rich_db_contents(pg18: PgServer) -> None:
    make_rich_db(pg18, "sd_rich", rows=120)
    tables = table_fingerprints(pg18, "sd_rich")
    assert {
        "public.users",
        "public.documents",
        "public.everything",
        "public.line_items",
        "public.session_cache",
        "public.events_2025h1",
        "public.events_2025h2",
        "public.attachments",
        "public.user_stats",
        "archive.users",
        "archive.Order Notes",
    } <= set(tables)
    assert "public.events" not in tables, "a partitioned parent is counted through its partitions"
    assert tables["public.events_2025h1"][0] + tables["public.events_2025h2"][0] == 120
    assert tables["public.session_cache"][0] == 30

    sequences = sequence_values(pg18, "sd_rich")
    for name, (last_value, is_called) in RICH_SEQUENCES.items():
        assert (sequences[name].last_value, sequences[name].is_called) == (last_value, is_called)
    assert sequences["archive.countdown"].increment == -3
    assert sequences["archive.countdown"].cycle

    digests = large_object_digest(pg18, "sd_rich")
    assert digests == {
        LARGE_OBJECT_BASE_OID + i: md5_hex(large_object_payload(i)) for i in range(5)
    }

    inventory = object_inventory(pg18, "sd_rich")
    for item in [
        ("view", "public.active_users"),
        ("materialized view", "public.user_stats"),
        ("function", "archive.order_total(n integer)"),
        ("function", "public.touch_updated_at()"),
        ("trigger", "public.line_items.line_items_touch"),
        ("enum sad,ok,happy", "public.mood"),
        ("domain", "public.positive_amount"),
        ("unlogged table", "public.session_cache"),
        ("partitioned table", "public.events"),
        ("schema", "archive"),
        ("index", "public.everything_note_trgm"),
    ]:
        assert item in inventory
    assert {k for k, _ in inventory if k.startswith("extension")} == {"extension"}
    assert {n.split()[0] for k, n in inventory if k == "extension"} >= {"vector", "citext"}

    generated = pg18.execute(
        "SELECT bool_and(total = qty * unit_price), bool_and(updated_at IS NOT NULL)"
        " FROM line_items",
        "sd_rich",
    )
    assert generated == [(True, True)]
    awkward = pg18.execute(
        "SELECT count(*) FROM archive.\"Order Notes\" WHERE \"Note\" LIKE '%' || chr(9) || '%'",
        "sd_rich",
    )
    assert awkward[0][0] > 0  # type: ignore[operator]
    pg18.drop_database("sd_rich")


def _run(*argv: str | Path, stdin: bytes | None = None) -> bytes:
    result = subprocess.run(
        [str(a) for a in argv], input=stdin, capture_output=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


def test_round_trip_custom_format_pg18(pg18: PgServer, workdir: Path) -> None:
    """pg_dump -Fc | pg_restore: every comparer agrees, and so does the exact vector probe."""
    make_rich_db(pg18, "sd_rt_src", rows=150)
    dump = workdir / "rich.dump"
    _run(pg18.bin_dir / "pg_dump", "-Fc", "-f", dump, "-d", pg18.dsn("sd_rt_src"))
    pg18.create_database("sd_rt_dst")
    _run(pg18.bin_dir / "pg_restore", "--exit-on-error", "-d", pg18.dsn("sd_rt_dst"), dump)
    assert _snapshot(pg18, "sd_rt_dst") == _snapshot(pg18, "sd_rt_src")
    assert object_inventory(pg18, "sd_rt_dst") == object_inventory(pg18, "sd_rt_src")
    assert nearest_documents(pg18, "sd_rt_dst", 7) == nearest_documents(pg18, "sd_rt_src", 7)
    pg18.drop_database("sd_rt_dst")
    pg18.drop_database("sd_rt_src")


def test_round_trip_plain_sql_pg15(pg15: PgServer) -> None:
    """The seed's procedure, `pg_dump db | psql restore_db`, on PostgreSQL 15 without pgvector."""
    make_rich_db(pg15, "sd_plain_src", rows=80, vectors=False)
    script = _run(pg15.bin_dir / "pg_dump", "-d", pg15.dsn("sd_plain_src"))
    pg15.create_database("sd_plain_dst")
    _run(
        pg15.bin_dir / "psql",
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        pg15.dsn("sd_plain_dst"),
        stdin=script,
    )
    assert _snapshot(pg15, "sd_plain_dst") == _snapshot(pg15, "sd_plain_src")
    assert object_inventory(pg15, "sd_plain_dst") == object_inventory(pg15, "sd_plain_src")
    pg15.drop_database("sd_plain_dst")
    pg15.drop_database("sd_plain_src")


def test_same_data_on_both_servers(pg15: PgServer, pg18: PgServer) -> None:
    """The comparers read under fixed settings: PG 15 and PG 18 fingerprint the same data alike."""
    make_rich_db(pg15, "sd_cross", rows=60, vectors=False)
    make_rich_db(pg18, "sd_cross", rows=60, vectors=False)
    assert _snapshot(pg15, "sd_cross") == _snapshot(pg18, "sd_cross")
    pg15.drop_database("sd_cross")
    pg18.drop_database("sd_cross")


@pytest.mark.parametrize(
    "damage",
    [
        "DELETE FROM everything WHERE id = (SELECT max(id) FROM everything)",
        'UPDATE archive."Order Notes" SET "Note" = "Note" || \' \' WHERE "Order Id" = 3',
        "UPDATE everything SET ratio = 'NaN' WHERE id = 5 AND ratio IS DISTINCT FROM 'NaN'",
        "SELECT setval('ticket_no', 42, true)",
        "ALTER SEQUENCE invoice_no INCREMENT BY 8",
        f"SELECT lo_put({LARGE_OBJECT_BASE_OID + 3}, 10, '\\x00')",
        f"SELECT lo_unlink({LARGE_OBJECT_BASE_OID})",
        "TRUNCATE session_cache",
    ],
)
def test_comparers_notice_damage(pg18: PgServer, damage: str) -> None:
    make_rich_db(pg18, "sd_damage", rows=40, vectors=False, large_objects=5)
    before = _snapshot(pg18, "sd_damage")
    pg18.execute(damage, "sd_damage")
    assert _snapshot(pg18, "sd_damage") != before
    pg18.drop_database("sd_damage")
