"""``pgwarden check``: the production checklist on real databases (pgvector on PostgreSQL 18)."""

from __future__ import annotations

import json
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy
import tomli_w

from pgwarden import cli
from pgwarden.catalog import Catalog, open_catalog
from pgwarden.config import Config, parse
from pgwarden.monitor import pgvector
from pgwarden.monitor.checklist import credentials_check, restore_tested, run_checklist
from pgwarden.monitor.dbchecks import pooling_verdict, ssl_verdict, supabase_kind
from pgwarden.monitor.verdicts import CheckResult
from tests.pgbouncer import PgBouncerFactory
from tests.pgservers import PgServer

NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)


def config_data(workdir: Path, targets: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "daemon": {"state_dir": str(workdir / "state")},
        "storage": {"path": str(workdir / "backups")},
        "targets": targets,
        **extra,
    }


def by_check(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.check + (f":{r.subject}" if r.subject else ""): r for r in results}


def record_drill(catalog: Catalog, target: str, finished: datetime, status: str) -> None:
    backup_id = uuid.uuid4().hex
    started = finished - timedelta(minutes=10)
    catalog.record_backup_start(
        backup_id, target=target, database="x", started_at=started, format="custom"
    )
    catalog.record_backup_finish(backup_id, status="complete", finished_at=started)
    catalog.record_verification(
        backup_id,
        started_at=finished - timedelta(minutes=1),
        finished_at=finished,
        status=status,
        error=None if status == "passed" else "row count of users: 3 != 4",
    )


def make_vector_database(server: PgServer, name: str) -> None:
    server.create_database(name)
    server.execute("CREATE EXTENSION vector", name)
    # a column above the index threshold with no ANN index
    server.execute(
        "CREATE TABLE documents (id serial PRIMARY KEY, content text, embedding vector(384));"
        "INSERT INTO documents (content, embedding) SELECT 'doc ' || i,"
        " array_fill((i % 100)::real / 100, ARRAY[384])::vector FROM generate_series(1, 12000) i",
        name,
    )
    # the strategy's example: an ivfflat index with lists = 100 created on an empty table
    server.execute(
        "CREATE TABLE notes (id serial PRIMARY KEY, embedding vector(384));"
        "CREATE INDEX ON notes USING ivfflat (embedding vector_cosine_ops) WITH (lists = 100);"
        "INSERT INTO notes (embedding) SELECT array_fill(i::real, ARRAY[384])::vector"
        " FROM generate_series(1, 50) i",
        name,
    )
    server.execute(
        "CREATE TABLE small_docs (id serial PRIMARY KEY, embedding halfvec(8));"
        "CREATE INDEX small_docs_hnsw ON small_docs USING hnsw (embedding halfvec_l2_ops);"
        "INSERT INTO small_docs (embedding) SELECT array_fill(i::real, ARRAY[8])::halfvec"
        " FROM generate_series(1, 20) i",
        name,
    )
    # a table read by sequential scans only
    server.execute(
        "CREATE TABLE items (id int, sku text);"
        "INSERT INTO items SELECT i, 'sku-' || i FROM generate_series(1, 5000) i",
        name,
    )
    with psycopg.connect(server.dsn(name), autocommit=True) as conn:
        for i in range(60):
            conn.execute("SELECT * FROM items WHERE sku = %s", (f"sku-{i}",))
    server.execute("ANALYZE", name)


def test_checklist_on_a_pgvector_database(pg18: PgServer, workdir: Path) -> None:
    make_vector_database(pg18, "chk_vec")
    target = {
        "name": "vec",
        "dsn": pg18.dsn("chk_vec"),
        "pools": [{"application": "api", "pool_size": 5, "max_overflow": 10, "processes": 2}],
    }
    config = parse(config_data(workdir, [target]), workdir / "pgwarden.toml")
    config.daemon.state_dir.mkdir()
    catalog = open_catalog(config.daemon.effective_catalog_url)
    try:
        record_drill(catalog, "vec", NOW - timedelta(days=2), "passed")
    finally:
        catalog.close()
    try:
        with ExitStack() as stack:
            for _ in range(12):  # more than 10, held for the whole check
                conn = psycopg.connect(pg18.dsn("chk_vec"), application_name="api")
                stack.enter_context(conn).execute("SELECT 1")
            results = run_checklist(config, now=NOW, gap_s=0.2)
        found = by_check(results)
        status = {key: r.status for key, r in found.items()}
        assert status == {
            "credentials": "pass",
            "backup.automation": "pass",
            "backup.restore_tested": "pass",
            "server.reachable": "pass",
            "connections.pooling": "warn",
            "connections.limits": "pass",
            "connections.database_limit:chk_vec": "pass",
            "connections.role_limit": "pass",
            "monitoring.role": "pass",
            "indexes": "warn",
            "ssl": "pass",
            "pgvector.extension": "pass",
            "pgvector.column:public.documents.embedding": "warn",
            "pgvector.column:public.notes.embedding": "warn",
            "pgvector.column:public.small_docs.embedding": "pass",
            "pg_dump": "pass",
        }, {k: r.detail for k, r in found.items()}
        assert "PgBouncer" in found["connections.pooling"].detail
        assert "12 concurrent connections sustained" in found["connections.pooling"].detail
        assert "public.items" in found["indexes"].detail
        assert "documents" not in found["indexes"].detail
        assert "12,000 rows" in found["pgvector.column:public.documents.embedding"].detail
        assert "no ivfflat/hnsw index" in found["pgvector.column:public.documents.embedding"].detail
        notes = found["pgvector.column:public.notes.embedding"].detail
        assert "lists=100" in notes
        assert "~1" in notes
        assert (
            "hnsw index small_docs_hnsw"
            in found["pgvector.column:public.small_docs.embedding"].detail
        )
        assert found["pgvector.extension"].detail.startswith("pgvector 0.")
        assert "can handle PostgreSQL 18" in found["pg_dump"].detail
        assert "listens only locally" in found["ssl"].detail
        assert "drills every 7 days" in found["backup.restore_tested"].detail
        assert "can open 30" in found["connections.limits"].detail
    finally:
        pg18.drop_database("chk_vec")


def test_check_command_json_and_exit_codes(
    pg18: PgServer, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pg18.create_database("chk_cli")
    path = workdir / "pgwarden.toml"
    target = {"name": "cli", "dsn": pg18.dsn("chk_cli")}
    path.write_text(tomli_w.dumps(config_data(workdir, [target])))
    try:
        # no catalog yet: the restore was never tested, so the check fails (exit 1)
        assert cli.main(["check", "-c", str(path), "--json"]) == 1
        doc = json.loads(capsys.readouterr().out)
        assert doc["ok"] is False
        items = {r["check"]: r for r in doc["results"]}
        assert items["backup.restore_tested"]["status"] == "fail"
        assert "no catalog" in items["backup.restore_tested"]["detail"]
        assert items["pgvector.extension"]["status"] == "pass"
        assert "not installed" in items["pgvector.extension"]["detail"]
        assert items["server.reachable"]["title"] == "Server reachable"
        assert doc["counts"]["fail"] == 1

        config = parse(config_data(workdir, [target]), path)
        config.daemon.state_dir.mkdir()
        with open_catalog(config.daemon.effective_catalog_url) as catalog:
            record_drill(catalog, "cli", datetime.now(UTC) - timedelta(hours=5), "passed")
        # the drill recorded above names a backup whose files were never written: the
        # restore counts as tested, and the storage check reports the dangling catalog row
        assert cli.main(["check", "-c", str(path), "cli"]) == 1
        out = capsys.readouterr().out
        assert "target cli:" in out
        assert "PASS  Backup restore tested:" in out
        assert "FAIL  Catalog and storage agree:" in out
        assert "1 fail" in out

        assert cli.main(["check", "-c", str(path), "nosuch"]) == 2  # unknown target
        capsys.readouterr()
    finally:
        pg18.drop_database("chk_cli")


def test_pooler_in_front_and_an_unreachable_server(
    pg18: PgServer, pgbouncer_factory: PgBouncerFactory, workdir: Path
) -> None:
    pg18.create_database("chk_pool")
    bouncer = pgbouncer_factory(default_pool_size=5)
    with psycopg.connect(bouncer.dsn("chk_pool"), prepare_threshold=None, autocommit=True) as c:
        c.execute("SELECT 1")  # PgBouncer now lists chk_pool (an auto-database)
    targets = [
        {"name": "pooled", "dsn": pg18.dsn("chk_pool")},
        {"name": "down", "dsn": "host=127.0.0.1 port=1 dbname=x user=postgres"},
    ]
    data = config_data(workdir, targets, pgbouncer=[{"name": "main", "dsn": bouncer.admin_dsn()}])
    config = parse(data, workdir / "pgwarden.toml")
    try:
        results = run_checklist(config, now=NOW, samples=1)
        pooled = by_check([r for r in results if r.target == "pooled"])
        assert pooled["connections.pooling"].status == "pass"
        assert "PgBouncer main" in pooled["connections.pooling"].detail
        down = [r for r in results if r.target == "down"]
        assert [(r.check, r.status) for r in down if r.check == "server.reachable"] == [
            ("server.reachable", "fail")
        ]
        assert "Connection refused" in next(r.detail for r in down if r.check == "server.reachable")
    finally:
        pg18.drop_database("chk_pool")


def test_checklist_on_postgresql_15(pg15: PgServer, workdir: Path) -> None:
    config = parse(config_data(workdir, [{"name": "old", "dsn": pg15.dsn()}]), workdir / "p.toml")
    found = by_check(run_checklist(config, now=NOW, samples=1))
    assert found["server.reachable"].detail.startswith("PostgreSQL 15.")
    assert found["pg_dump"].status == "pass"
    assert found["ssl"].status == "pass"
    assert found["pgvector.extension"].status == "pass"
    assert found["connections.limits"].status == "pass"


def _config(workdir: Path, **target: Any) -> Config:
    base = {"name": "t", "dsn": "host=127.0.0.1 dbname=x user=u", **target}
    return parse(config_data(workdir, [base]), workdir / "pgwarden.toml")


def test_restore_tested_rules(workdir: Path) -> None:
    config = _config(workdir)
    target = config.targets[0]
    (workdir / "state").mkdir()
    with open_catalog(config.daemon.effective_catalog_url) as catalog:
        assert restore_tested(config, target, catalog, "", NOW).status == "fail"  # never
        record_drill(catalog, "t", NOW - timedelta(days=20), "passed")
        result = restore_tested(config, target, catalog, "", NOW)
        assert result.status == "warn"
        assert "overdue" in result.detail
        record_drill(catalog, "t", NOW - timedelta(days=3), "passed")
        assert restore_tested(config, target, catalog, "", NOW).status == "pass"
        record_drill(catalog, "t", NOW - timedelta(hours=1), "failed")
        result = restore_tested(config, target, catalog, "", NOW)
        assert result.status == "fail"
        assert "row count of users" in result.detail
    unknown = restore_tested(config, target, None, "cannot open the catalog: boom", NOW)
    assert unknown.status == "unknown"


def test_credentials_check(workdir: Path) -> None:
    assert credentials_check(_config(workdir, password_env="PW")).status == "pass"
    plain = parse(
        config_data(
            workdir,
            [{"name": "t", "dsn": "postgresql://u:secret@db.example.com/x"}],
            daemon={"state_dir": str(workdir), "allow_plaintext_passwords": True},
        ),
        workdir / "pgwarden.toml",
    )
    result = credentials_check(plain)
    assert result.status == "fail"
    assert "targets[t].dsn" in result.detail
    assert "secret" not in result.detail


def test_backup_automation_disabled_fails(workdir: Path) -> None:
    config = _config(workdir, backup={"enabled": False})
    results = run_checklist(config, now=NOW, samples=1)
    assert by_check(results)["backup.automation"].status == "fail"


def test_ssl_verdicts() -> None:
    local = {"listen_addresses": "localhost", "host": "/run/postgresql", "sslmode": "prefer"}
    assert ssl_verdict(ssl_on=False, encrypted=False, plain_hba=None, **local)[0] == "pass"
    remote = {"ssl_on": False, "listen_addresses": "*", "host": "", "sslmode": "prefer"}
    assert ssl_verdict(encrypted=False, plain_hba=None, **remote)[0] == "fail"
    client = {"ssl_on": True, "listen_addresses": "localhost", "host": "db.example.com"}
    assert ssl_verdict(sslmode="prefer", encrypted=False, plain_hba=None, **client)[0] == "fail"
    assert ssl_verdict(sslmode="prefer", encrypted=True, plain_hba=None, **client)[0] == "warn"
    assert ssl_verdict(sslmode="verify-full", encrypted=True, plain_hba=None, **client)[0] == "pass"
    hba = {"ssl_on": True, "listen_addresses": "0.0.0.0", "host": "", "sslmode": "prefer"}
    assert ssl_verdict(encrypted=False, plain_hba=["line 9: all"], **hba)[0] == "warn"
    assert ssl_verdict(encrypted=False, plain_hba=[], **hba)[0] == "pass"


def test_pooling_advice_vps_and_supabase() -> None:
    assert supabase_kind("db.abcd.supabase.co", "5432") == "direct"
    assert supabase_kind("aws-0-eu-west-1.pooler.supabase.com", "6543") == "pooler"
    assert supabase_kind("db.abcd.supabase.co", "6543") == "pooler"
    assert supabase_kind("10.0.0.5", "5432") is None
    status, detail = pooling_verdict([14, 12, 13], None, None, [])
    assert status == "warn"
    assert "PgBouncer" in detail
    status, detail = pooling_verdict([14, 12, 13], None, "direct", [])
    assert status == "warn"
    assert "Supabase pooler" in detail
    assert pooling_verdict([30, 3, 30], None, None, [])[0] == "pass"  # a burst is not sustained
    assert pooling_verdict([50], "PgBouncer main", None, [])[0] == "pass"


def test_vector_column_judgement() -> None:
    def column(rows: int, *indexes: pgvector.VectorIndex, dims: int = 384) -> pgvector.VectorColumn:
        return pgvector.VectorColumn("public", "d", "e", "vector", dims, rows, False, indexes)

    hnsw = pgvector.VectorIndex("d_hnsw", "hnsw", ())
    status, detail = pgvector.judge_column(column(1_500_000, hnsw))
    assert status == "warn"
    assert "beyond the strategy's ~1M" in detail
    assert pgvector.judge_column(column(850_000, hnsw))[0] == "warn"
    assert pgvector.judge_column(column(200_000, hnsw))[0] == "pass"
    ivf = pgvector.VectorIndex("d_ivf", "ivfflat", (("lists", "100"),))
    assert pgvector.judge_column(column(100_000, ivf))[0] == "pass"
    assert pgvector.judge_column(column(1_000_000, ivf))[0] == "warn"  # advice: 1000
    status, detail = pgvector.judge_column(column(20_000, dims=3072))
    assert status == "warn"
    assert "halfvec" in detail
    assert pgvector.recommended_lists(4_000_000) == 2000
    assert pgvector.recommended_lists(500) == 1


def test_a_table_whose_name_holds_a_colon_is_counted(pg18: PgServer) -> None:
    """A quoted identifier never becomes a bind parameter (``"a :b"`` is not ``:b``)."""
    pg18.create_database("chk_colon")
    pg18.execute("CREATE EXTENSION vector", "chk_colon")
    pg18.execute(
        'CREATE TABLE "a :b" (id int, embedding vector(3));'
        "INSERT INTO \"a :b\" SELECT i, '[1,2,3]' FROM generate_series(1, 5) i",
        "chk_colon",
    )
    engine = sqlalchemy.create_engine(
        "postgresql+psycopg://", creator=lambda: psycopg.connect(pg18.dsn("chk_colon"))
    )
    try:
        with engine.connect() as conn:
            inventory = pgvector.read_inventory(conn)
    finally:
        engine.dispose()
        pg18.drop_database("chk_colon")
    (column,) = inventory.columns
    assert (column.table, column.rows, column.rows_exact) == ("a :b", 5, True)
