"""What the catalog says about one target's copies on one off-site destination, in one record.

:func:`summarize` folds the ``offsite_copies`` rows of :func:`pgwarden.catalog.offsite.copies`
into a :class:`DestinationSummary` per (target, destination): the confirmed copies, their
bytes, the newest confirmed upload, the oldest and newest backup kept there, and whether the
newest attempt failed (with its error, already redacted when it was recorded).  Three readers
share it, so that they agree: the metrics restored at daemon start-up, ``pgwarden check`` and
``ctl status``.

"Failing" means the most recently updated row of the pair is ``failed``: the upload side
records each attempt, newest backup first, and a retried copy that succeeds turns its row
``confirmed``; a failure long since followed by successes is history, not a problem.  Rows
that remote retention turned ``deleted`` are not attempts (they are written after the uploads
of the same run).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from pgwarden.catalog.offsite import OffsiteCopyRecord, copies
from pgwarden.catalog.queries import Catalog
from pgwarden.catalog.states import CopyState


@dataclass(frozen=True)
class DestinationSummary:
    """One target's copies on one destination, as the catalog records them."""

    target: str
    destination: str
    copies: int  # confirmed (object and manifest stored)
    stored_bytes: int  # the confirmed objects' sizes (manifests not counted)
    last_upload: datetime | None  # newest confirmed upload, removed copies included
    oldest_copy: datetime | None  # start time of the oldest backup confirmed there
    newest_copy: datetime | None  # start time of the newest backup confirmed there
    failing: bool  # the newest attempt failed
    last_error: str | None  # the newest failed attempt's error (redacted), when failing
    last_error_at: datetime | None
    failed_backup: str | None  # the backup id of that attempt

    @classmethod
    def empty(cls, target: str, destination: str) -> DestinationSummary:
        return cls(target, destination, 0, 0, None, None, None, False, None, None, None)


_NEVER = datetime.min.replace(tzinfo=UTC)


def _updated(record: OffsiteCopyRecord) -> datetime:
    return record.updated_at or record.uploaded_at or record.backup_started_at or _NEVER


def summarize(records: Iterable[OffsiteCopyRecord]) -> dict[tuple[str, str], DestinationSummary]:
    """(target, destination) -> its summary, for every pair with at least one row."""
    grouped: dict[tuple[str, str], list[OffsiteCopyRecord]] = {}
    for record in records:
        grouped.setdefault((record.target, record.destination), []).append(record)
    return {pair: _summary(pair, rows) for pair, rows in grouped.items()}


def _summary(pair: tuple[str, str], rows: list[OffsiteCopyRecord]) -> DestinationSummary:
    confirmed = [r for r in rows if r.state == CopyState.CONFIRMED]
    uploads = [
        r.uploaded_at
        for r in rows
        if r.uploaded_at is not None and r.state in (CopyState.CONFIRMED, CopyState.DELETED)
    ]
    starts = [r.backup_started_at for r in confirmed if r.backup_started_at is not None]
    # a remote prune's deletions come after the uploads of the same run: not an attempt
    attempts = [r for r in rows if r.state != CopyState.DELETED]
    newest = max(attempts, key=_updated) if attempts else None
    failed = newest if newest is not None and newest.state == CopyState.FAILED else None
    return DestinationSummary(
        target=pair[0],
        destination=pair[1],
        copies=len(confirmed),
        stored_bytes=sum(r.size_bytes or 0 for r in confirmed),
        last_upload=max(uploads, default=None),
        oldest_copy=min(starts, default=None),
        newest_copy=max(starts, default=None),
        failing=failed is not None,
        last_error=failed.error if failed is not None else None,
        last_error_at=_updated(failed) if failed is not None else None,
        failed_backup=failed.backup_id if failed is not None else None,
    )


def destination_summaries(
    catalog: Catalog, pairs: Iterable[tuple[str, str]]
) -> list[DestinationSummary]:
    """The summary of each (target, destination) asked for, in that order; a pair without
    any row gets an empty one.  Raises what the catalog raises
    (:class:`~pgwarden.errors.CatalogError`)."""
    wanted = list(dict.fromkeys(pairs))
    if not wanted:
        return []
    targets = {t for t, _ in wanted}
    found = summarize(
        r
        for t in sorted(targets)
        for r in copies(catalog, target=t)
        if (t, r.destination) in wanted
    )
    return [found.get(pair) or DestinationSummary.empty(*pair) for pair in wanted]
