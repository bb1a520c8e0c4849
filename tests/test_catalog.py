"""The catalog on real databases: SQLite in a temp dir and the PostgreSQL 18 fixture."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from uuid import uuid4

import pytest
from sqlalchemy import create_engine, text

from pgwarden.catalog import Catalog, head_revision, open_catalog
from pgwarden.catalog.db import parse_url
from pgwarden.errors import CatalogError, NotFoundError, UsageError
from tests.pgservers import PgServer, free_port

T0 = datetime(2026, 11, 26, 3, 15, 0, 123456, tzinfo=UTC)
PLUS2 = timezone(timedelta(hours=2))


def new_id() -> str:
    return uuid4().hex


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request: pytest.FixtureRequest, workdir: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{workdir / 'state' / 'catalog.db'}"
        return
    server: PgServer = request.getfixturevalue("pg18")
    name = f"pgwarden_catalog_{uuid4().hex[:8]}"
    server.create_database(name)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{server.port}/{name}"
    finally:
        server.drop_database(name)


@pytest.fixture
def catalog(catalog_url: str) -> Iterator[Catalog]:
    with open_catalog(catalog_url) as opened:
        yield opened


def start(catalog: Catalog, target: str = "app", at: datetime = T0, **kwargs: object) -> str:
    backup_id = str(kwargs.pop("backup_id", new_id()))
    catalog.record_backup_start(
        backup_id,
        target=target,
        database=f"{target}_db",
        started_at=at,
        format="custom",
        **kwargs,  # type: ignore[arg-type]
    )
    return backup_id


def complete(catalog: Catalog, target: str = "app", at: datetime = T0, size: int = 100) -> str:
    backup_id = start(catalog, target, at)
    catalog.record_backup_finish(
        backup_id,
        status="complete",
        finished_at=at + timedelta(seconds=30),
        size_bytes=size,
        sha256="ab" * 32,
        path=f"{target}/{backup_id}.dump",
    )
    return backup_id


def revision_of(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return [
                r[0] for r in connection.execute(text("SELECT version_num FROM alembic_version"))
            ]
    finally:
        engine.dispose()


# -- opening --------------------------------------------------------------------------------


def test_open_applies_migrations_and_reopening_is_a_no_op(catalog_url: str) -> None:
    with open_catalog(catalog_url) as first:
        backup_id = complete(first)
    assert revision_of(catalog_url) == [head_revision()]
    with open_catalog(catalog_url) as second:
        assert second.get_backup(backup_id).status == "complete"
    assert revision_of(catalog_url) == [head_revision()]


def test_unknown_revision_is_refused(catalog_url: str) -> None:
    open_catalog(catalog_url).close()
    engine = create_engine(catalog_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = 'abc123def'"))
    engine.dispose()
    with pytest.raises(
        CatalogError, match="revision 'abc123def' which this pgwarden does not"
    ) as e:
        open_catalog(catalog_url)
    assert "written by a newer version" in str(e.value)
    assert revision_of(catalog_url) == ["abc123def"]  # refused, not touched


def test_concurrent_opens_migrate_once(catalog_url: str) -> None:
    errors: list[BaseException] = []

    def opener() -> None:
        try:
            open_catalog(catalog_url).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert revision_of(catalog_url) == [head_revision()]


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(workdir: Path) -> None:
    url = f"sqlite:///{workdir / 'deep' / 'state' / 'catalog.db'}"
    with open_catalog(url) as catalog, catalog.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    assert (workdir / "deep" / "state").stat().st_mode & 0o777 == 0o700


def test_urls_are_normalised_and_checked() -> None:
    assert parse_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert parse_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    with pytest.raises(CatalogError, match="only sqlite"):
        parse_url("mysql://u@h/db")
    with pytest.raises(CatalogError, match="SQLite file"):
        parse_url("sqlite://")


def test_an_unreachable_catalog_fails_clearly_without_the_password() -> None:
    url = f"postgresql://pgwarden:s3cret-pw@127.0.0.1:{free_port()}/catalog"
    with pytest.raises(CatalogError, match="cannot open the catalog at") as caught:
        open_catalog(url)
    assert "s3cret-pw" not in str(caught.value)
    assert "***" in str(caught.value)


# -- backups --------------------------------------------------------------------------------


def test_backup_round_trip_keeps_aware_utc_datetimes(catalog: Catalog) -> None:
    backup_id = new_id()
    started = T0.astimezone(PLUS2)
    running = catalog.record_backup_start(
        backup_id,
        target="app",
        database="app_db",
        started_at=started,
        format="directory",
        compression="zstd",
        tags=["scheduled", "pre-migration"],
        attempt=2,
    )
    assert running.status == "running"
    assert running.started_at == T0
    assert running.started_at.tzinfo == UTC

    finished = catalog.record_backup_finish(
        backup_id,
        status="complete",
        finished_at=T0 + timedelta(minutes=2),
        size_bytes=5 << 30,
        sha256="0f" * 32,
        path="app/20261126T031500Z-x.dir",
    )
    again = catalog.get_backup(backup_id)
    assert again == finished
    assert again.started_at == T0
    assert again.started_at.utcoffset() == timedelta(0)
    assert again.finished_at == T0 + timedelta(minutes=2)
    assert again.finished_at is not None
    assert again.finished_at.tzinfo == UTC
    assert again.duration_s == 120.0
    assert again.tags == ("scheduled", "pre-migration")
    assert (again.format, again.compression, again.attempt) == ("directory", "zstd", 2)
    assert again.size_bytes == 5 << 30
    assert again.short_id == backup_id[:8]


def test_naive_datetimes_and_bad_values_are_refused(catalog: Catalog) -> None:
    naive = datetime(2026, 1, 1)
    with pytest.raises(ValueError, match="timezone-aware"):
        start(catalog, at=naive)
    with pytest.raises(ValueError, match="32 lowercase hex"):
        start(catalog, backup_id="not-an-id")
    backup_id = start(catalog)
    with pytest.raises(ValueError, match="status"):
        catalog.record_backup_finish(backup_id, status="deleted", finished_at=T0)
    with pytest.raises(CatalogError, match="already recorded"):
        start(catalog, backup_id=backup_id)


def test_failed_attempts_record_their_error(catalog: Catalog) -> None:
    backup_id = start(catalog)
    failed = catalog.record_backup_finish(
        backup_id,
        status="failed",
        finished_at=T0 + timedelta(seconds=3),
        error="pg_dump: error: connection refused",
    )
    assert (failed.status, failed.error, failed.duration_s) == (
        "failed",
        "pg_dump: error: connection refused",
        3.0,
    )
    with pytest.raises(CatalogError, match="already failed"):
        catalog.record_backup_finish(backup_id, status="complete", finished_at=T0)


def test_listing_is_newest_first_and_filters(catalog: Catalog) -> None:
    old = complete(catalog, "app", T0)
    new = complete(catalog, "app", T0 + timedelta(days=1))
    other = complete(catalog, "crm", T0 + timedelta(hours=1))
    failed = start(catalog, "app", T0 + timedelta(days=2))
    catalog.record_backup_finish(failed, status="failed", finished_at=T0 + timedelta(days=2))
    assert [b.id for b in catalog.list_backups()] == [failed, new, other, old]
    assert [b.id for b in catalog.list_backups("app", statuses=["complete"])] == [new, old]
    assert [b.id for b in catalog.list_backups(limit=1)] == [failed]
    assert catalog.list_backups("nobody") == []
    assert catalog.targets() == ["app", "crm"]
    last = catalog.last_success("app")
    assert last is not None
    assert last.id == new
    assert catalog.last_success("nobody") is None
    with pytest.raises(ValueError, match="unknown backup statuses"):
        catalog.list_backups(statuses=["bogus"])


def test_get_backup_by_prefix_name_and_target(catalog: Catalog) -> None:
    first = start(catalog, backup_id="abcd" + "0" * 28)
    second = start(catalog, "crm", backup_id="abcd" + "1" * 28)
    assert catalog.get_backup(first).id == first
    assert catalog.get_backup("ABCD0").id == first
    assert catalog.get_backup(f"20261126T031500Z-{second[:8]}.dump").id == second
    assert catalog.get_backup("abcd", target="crm").id == second
    with pytest.raises(UsageError, match="ambiguous"):
        catalog.get_backup("abcd")
    with pytest.raises(NotFoundError, match="no backup"):
        catalog.get_backup("ffff")
    with pytest.raises(NotFoundError, match="4\\+ digits"):
        catalog.get_backup("ab")
    with pytest.raises(NotFoundError, match="of target 'app'"):
        catalog.get_backup(second, target="app")


def test_mark_running_interrupted(catalog: Catalog) -> None:
    done = complete(catalog)
    dead = [start(catalog, at=T0 + timedelta(hours=i)) for i in (1, 2)]
    drill = catalog.start_verification(done, T0 + timedelta(hours=3))

    assert catalog.mark_running_interrupted(at=T0 + timedelta(hours=4)) == 2

    for backup_id in dead:
        row = catalog.get_backup(backup_id)
        assert row.status == "interrupted"
        assert row.finished_at == T0 + timedelta(hours=4)
        assert row.error is not None
        assert "interrupted" in row.error
    assert catalog.get_backup(done).status == "complete"
    (recorded,) = catalog.list_verifications(done)
    assert (recorded.id, recorded.status) == (drill.id, "interrupted")
    assert catalog.get_backup(done).verify_status is None
    assert catalog.mark_running_interrupted() == 0
    # a one-shot CLI backup that was still alive may still finish
    finished = catalog.record_backup_finish(
        dead[0], status="complete", finished_at=T0 + timedelta(hours=5)
    )
    assert finished.status == "complete"


def test_pin_unpin_and_delete(catalog: Catalog) -> None:
    backup_id = complete(catalog)
    assert catalog.set_pinned(backup_id[:6], True).pinned is True
    assert catalog.set_pinned(backup_id, False, target="app").pinned is False
    catalog.set_pinned(backup_id, True)
    failed = start(catalog)
    catalog.record_backup_finish(failed, status="failed", finished_at=T0)
    with pytest.raises(UsageError, match="only complete backups"):
        catalog.set_pinned(failed, True)

    deleted = catalog.mark_deleted(backup_id, at=T0 + timedelta(days=8))
    assert (deleted.status, deleted.pinned) == ("deleted", False)
    assert deleted.deleted_at == T0 + timedelta(days=8)
    assert catalog.last_success("app") is None


def test_verifications_update_the_backup_summary(catalog: Catalog) -> None:
    backup_id = complete(catalog)
    details = {"row_counts": {"public.users": 42}, "checks": ["users exist"]}
    passed = catalog.record_verification(
        backup_id,
        started_at=T0 + timedelta(hours=1),
        finished_at=T0 + timedelta(hours=1, minutes=5),
        status="passed",
        details=details,
    )
    assert passed.details == details
    row = catalog.get_backup(backup_id)
    assert (row.verify_status, row.verified_at) == ("passed", T0 + timedelta(hours=1, minutes=5))

    drill = catalog.start_verification(backup_id[:8], T0 + timedelta(days=1))
    assert drill.status == "running"
    failed = catalog.finish_verification(
        drill.id,
        status="failed",
        finished_at=T0 + timedelta(days=1, minutes=1),
        details={"check": "users exist", "expected": 1, "actual": 0},
        error="users exist: 0 < 1",
    )
    assert failed.finished_at is not None
    assert failed.finished_at.tzinfo == UTC
    assert catalog.get_backup(backup_id).verify_status == "failed"
    assert [v.status for v in catalog.list_verifications(backup_id)] == ["failed", "passed"]
    assert [v.id for v in catalog.list_verifications(target="app", limit=1)] == [drill.id]
    assert catalog.list_verifications(target="crm") == []
    with pytest.raises(NotFoundError):
        catalog.finish_verification(10_000, status="passed", finished_at=T0)


def test_summaries_restore_gauges(catalog: Catalog) -> None:
    assert catalog.summaries() == {}
    first = complete(catalog, "app", T0, size=100)
    second = complete(catalog, "app", T0 + timedelta(days=1), size=250)
    catalog.record_verification(
        first,
        started_at=T0 + timedelta(hours=2),
        finished_at=T0 + timedelta(hours=3),
        status="passed",
    )
    failed = start(catalog, "app", T0 + timedelta(days=2))
    catalog.record_backup_finish(failed, status="failed", finished_at=T0 + timedelta(days=2))
    catalog.mark_deleted(first)
    start(catalog, "crm", T0)

    summaries = catalog.summaries()
    assert sorted(summaries) == ["app", "crm"]
    app = summaries["app"]
    assert app.last_attempt_at == T0 + timedelta(days=2)
    assert app.last_attempt_status == "failed"
    assert app.last_success_at == T0 + timedelta(days=1, seconds=30)
    assert (app.last_success_size_bytes, app.last_success_duration_s) == (250, 30.0)
    assert app.last_verification_at == T0 + timedelta(hours=3)
    assert app.last_verification_status == "passed"
    assert (app.complete_count, app.complete_bytes, app.failed_count) == (1, 250, 1)
    assert catalog.get_backup(second).status == "complete"
    crm = summaries["crm"]
    assert (crm.last_attempt_status, crm.last_success_at, crm.complete_count) == (
        "running",
        None,
        0,
    )


# -- rebuild from manifests -----------------------------------------------------------------


def manifest(backup_id: str, **extra: object) -> dict[str, object]:
    document: dict[str, object] = {
        "version": 1,
        "id": backup_id,
        "target": "app",
        "database": "app_db",
        "started_at": "2026-11-26T05:15:00.123456+02:00",
        "finished_at": "2026-11-26T03:16:00Z",
        "format": "custom",
        "compression": "zstd",
        "size": 4096,
        "sha256": "cd" * 32,
        "tags": ["scheduled"],
        "row_counts": {"public.users": 3},
        "verifications": [
            {
                "started_at": "2026-11-27T05:00:00Z",
                "finished_at": "2026-11-27T05:02:00Z",
                "status": "passed",
                "details": {"tables": 3},
            }
        ],
    }
    document.update(extra)
    return document


def test_upsert_from_manifest_is_idempotent(catalog: Catalog) -> None:
    backup_id = new_id()
    record = catalog.upsert_from_manifest(manifest(backup_id), path="app/x.dump")
    assert record.status == "complete"
    assert record.started_at == T0
    assert record.finished_at == datetime(2026, 11, 26, 3, 16, tzinfo=UTC)
    assert (record.size_bytes, record.path, record.tags) == (4096, "app/x.dump", ("scheduled",))
    assert record.verify_status == "passed"
    assert record.verified_at == datetime(2026, 11, 27, 5, 2, tzinfo=UTC)

    catalog.set_pinned(backup_id, True)
    again = catalog.upsert_from_manifest(manifest(backup_id), path="app/x.dump")
    assert again.pinned is True  # the manifest did not say: kept
    assert len(catalog.list_backups()) == 1
    assert len(catalog.list_verifications(backup_id)) == 1

    catalog.mark_deleted(backup_id)
    revived = catalog.upsert_from_manifest(manifest(backup_id, pinned=False))
    assert (revived.status, revived.deleted_at, revived.pinned) == ("complete", None, False)


def test_rebuild_marks_vanished_backups_deleted(catalog: Catalog) -> None:
    kept = complete(catalog, "app")
    gone = complete(catalog, "app", T0 + timedelta(days=1))
    other = complete(catalog, "crm")
    assert catalog.mark_absent_deleted({kept}, target="app") == [gone]
    assert catalog.get_backup(gone).status == "deleted"
    assert catalog.get_backup(other).status == "complete"
    assert catalog.mark_absent_deleted({kept}) == [other]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"id": "xyz"}, "id: must be 32 lowercase hex"),
        ({"target": None}, "target: missing"),
        ({"started_at": "yesterday"}, "started_at: not an ISO 8601"),
        ({"size": -1}, "size: must be a non-negative integer"),
        ({"tags": "scheduled"}, "tags: must be a list"),
        (
            {"verifications": [{"status": "maybe", "started_at": "2026-11-27T05:00:00Z"}]},
            r"verifications\[0\]: status",
        ),
    ],
)
def test_bad_manifests_name_the_key(
    catalog: Catalog, change: dict[str, object], message: str
) -> None:
    with pytest.raises(CatalogError, match=message):
        catalog.upsert_from_manifest(manifest(new_id(), **change), where="app/x.manifest.json")
    assert catalog.list_backups() == []


# -- threads --------------------------------------------------------------------------------


def test_concurrent_writes_from_several_threads(catalog_url: str) -> None:
    threads_count, per_thread = 8, 15
    errors: list[BaseException] = []
    with open_catalog(catalog_url) as catalog:
        barrier = threading.Barrier(threads_count)

        def worker(index: int) -> None:
            try:
                barrier.wait()
                for n in range(per_thread):
                    at = T0 + timedelta(minutes=index * 100 + n)
                    backup_id = complete(catalog, f"t{index}", at, size=n)
                    catalog.record_verification(
                        backup_id,
                        started_at=at,
                        finished_at=at + timedelta(seconds=1),
                        status="passed",
                    )
                    catalog.list_backups(f"t{index}", limit=3)
                    catalog.summaries()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(threads_count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        backups = catalog.list_backups(statuses=["complete"])
        assert len(backups) == threads_count * per_thread
        assert all(b.verify_status == "passed" for b in backups)
        summaries = catalog.summaries()
        assert {s.complete_count for s in summaries.values()} == {per_thread}


def test_last_run_feeds_the_scheduler(catalog: Catalog) -> None:
    assert catalog.last_run("app", "backup") is None
    assert catalog.last_run("app", "verify") is None
    backup_id = complete(catalog, "app", T0)
    failed = start(catalog, "app", T0 + timedelta(days=1))
    catalog.record_backup_finish(failed, status="failed", finished_at=T0 + timedelta(days=1))
    complete(catalog, "crm", T0 + timedelta(days=5))
    catalog.record_verification(
        backup_id,
        started_at=T0 + timedelta(hours=5),
        finished_at=T0 + timedelta(hours=6),
        status="passed",
    )
    last_backup = catalog.last_run("app", "backup")
    assert last_backup == T0 + timedelta(days=1)
    assert last_backup is not None
    assert last_backup.tzinfo == UTC
    assert catalog.last_run("app", "verify") == T0 + timedelta(hours=5)
    assert catalog.last_run("crm", "verify") is None
    assert catalog.last_run("app", "prune") is None
