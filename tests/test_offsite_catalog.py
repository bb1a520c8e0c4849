"""The catalog's ``offsite_copies`` table on SQLite and PostgreSQL: record, list, pending."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError

from pgwarden.catalog import Catalog
from pgwarden.catalog.offsite import (
    CopyState,
    copies,
    mark_interrupted,
    pending_backups,
    record_copy,
)
from pgwarden.errors import NotFoundError
from tests.test_catalog import T0, catalog, catalog_url, complete, start

__all__ = ["catalog", "catalog_url"]  # the fixtures, imported for their side effect


def test_a_copy_goes_from_uploading_to_confirmed(catalog: Catalog) -> None:
    backup = complete(catalog)
    first = record_copy(
        catalog, backup_id=backup, destination="b2", key="app/x.dump.age", state="uploading"
    )
    assert (first.state, first.attempts, first.error) == (CopyState.UPLOADING, 1, None)
    failed = record_copy(
        catalog,
        backup_id=backup,
        destination="b2",
        key="app/x.dump.age",
        state=CopyState.FAILED,
        error="endpoint unreachable",
    )
    assert (failed.state, failed.attempts, failed.error) == (
        CopyState.FAILED,
        1,
        "endpoint unreachable",
    )
    record_copy(
        catalog, backup_id=backup, destination="b2", key="app/x.dump.age", state="uploading"
    )
    done = record_copy(
        catalog,
        backup_id=backup,
        destination="b2",
        key="app/x.dump.age",
        state=CopyState.CONFIRMED,
        size_bytes=1234,
        object_sha256="cd" * 32,
        encrypted=True,
        uploaded_at=T0 + timedelta(minutes=1),
    )
    assert done.state == CopyState.CONFIRMED
    assert done.attempts == 2
    assert done.error is None
    assert (done.size_bytes, done.object_sha256, done.encrypted) == (1234, "cd" * 32, True)
    assert done.uploaded_at == T0 + timedelta(minutes=1)
    assert done.target == "app"
    assert done.backup_started_at == T0
    [listed] = copies(catalog, target="app")
    assert listed == done


def test_one_row_per_backup_and_destination(catalog: Catalog) -> None:
    backup = complete(catalog)
    for destination in ("b2", "r2", "b2"):
        record_copy(catalog, backup_id=backup, destination=destination, key="k", state="confirmed")
    assert [c.destination for c in copies(catalog)] == ["b2", "r2"]
    assert [c.destination for c in copies(catalog, destination="r2")] == ["r2"]
    assert copies(catalog, target="other") == []
    assert copies(catalog, states=(CopyState.FAILED,)) == []


def test_pending_lists_complete_backups_not_confirmed_newest_first(catalog: Catalog) -> None:
    old = complete(catalog, at=T0)
    mid = complete(catalog, at=T0 + timedelta(hours=1))
    new = complete(catalog, at=T0 + timedelta(hours=2))
    start(catalog, at=T0 + timedelta(hours=3))  # running: not a backup yet
    complete(catalog, target="other", at=T0)
    record_copy(catalog, backup_id=mid, destination="b2", key="k", state="confirmed")
    record_copy(catalog, backup_id=new, destination="b2", key="k", state="failed", error="x")
    record_copy(catalog, backup_id=old, destination="b2", key="k", state="deleted")
    assert [b.id for b in pending_backups(catalog, target="app", destination="b2")] == [new]
    assert [b.id for b in pending_backups(catalog, target="app", destination="r2")] == [
        new,
        mid,
        old,
    ]
    catalog.mark_deleted(new)
    assert pending_backups(catalog, target="app", destination="b2") == []


def test_uploads_of_a_dead_run_are_marked_failed(catalog: Catalog) -> None:
    mine, other = complete(catalog), complete(catalog, target="other")
    for backup in (mine, other):
        record_copy(catalog, backup_id=backup, destination="b2", key="k", state="uploading")
    record_copy(catalog, backup_id=mine, destination="r2", key="k", state="confirmed")
    assert mark_interrupted(catalog, target="app", error="interrupted") == 1
    states = {(c.target, c.destination): (c.state, c.error) for c in copies(catalog)}
    assert states == {
        ("app", "b2"): (CopyState.FAILED, "interrupted"),
        ("app", "r2"): (CopyState.CONFIRMED, None),
        ("other", "b2"): (CopyState.UPLOADING, None),
    }


def test_unknown_backup_and_bad_state_are_refused(catalog: Catalog, catalog_url: str) -> None:
    with pytest.raises(NotFoundError):
        record_copy(catalog, backup_id="ab" * 16, destination="b2", key="k", state="confirmed")
    backup = complete(catalog)
    with pytest.raises(ValueError, match="copied"):
        record_copy(catalog, backup_id=backup, destination="b2", key="k", state="copied")  # type: ignore[arg-type]
    engine = create_engine(catalog_url)
    try:
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO offsite_copies (backup_id, destination, key, state, encrypted,"
                    " attempts, updated_at) VALUES (:b, 'b2', 'k', 'copied', false, 0,"
                    " CURRENT_TIMESTAMP)"
                ),
                {"b": backup},
            )
    finally:
        engine.dispose()
