"""Per-target summaries of the history, read once at start-up to restore metric gauges.

Gauges that describe history (last success, last size, last drill) must survive a restart, or
every restart would look like "no backup for ever" and fire alerts (DESIGN.md, Metrics).
"""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pgwarden.catalog.models import Backup
from pgwarden.catalog.records import TargetSummary, verdict
from pgwarden.catalog.states import BackupStatus


def _attempt_outcome(status: str) -> BackupStatus:
    """A deleted backup's attempt was a success."""
    return BackupStatus.COMPLETE if status == BackupStatus.DELETED else BackupStatus(status)


def summarise(session: Session, target: str | None = None) -> dict[str, TargetSummary]:
    """One :class:`TargetSummary` per target that has history (or of ``target`` only: what
    the metrics need after each job, without summarising every other target again)."""
    grouped = select(
        Backup.target, Backup.status, func.count(), func.sum(Backup.size_bytes)
    ).group_by(Backup.target, Backup.status)
    if target is not None:
        grouped = grouped.where(Backup.target == target)
    counts: dict[tuple[str, str], tuple[int, int]] = {
        (name, status): (count, int(size or 0))
        for name, status, count, size in session.execute(grouped)
    }
    result: dict[str, TargetSummary] = {}
    for name in sorted({name for name, _ in counts}):
        newest = select(Backup).where(Backup.target == name).limit(1)
        attempt = session.scalars(newest.order_by(Backup.started_at.desc())).first()
        success = session.scalars(
            newest.where(Backup.status.in_((BackupStatus.COMPLETE, BackupStatus.DELETED))).order_by(
                Backup.started_at.desc()
            )
        ).first()
        drilled = session.scalars(
            newest.where(Backup.verified_at.is_not(None)).order_by(Backup.verified_at.desc())
        ).first()
        complete = counts.get((name, BackupStatus.COMPLETE), (0, 0))
        summary = TargetSummary(
            target=name,
            complete_count=complete[0],
            complete_bytes=complete[1],
            failed_count=counts.get((name, BackupStatus.FAILED), (0, 0))[0],
        )
        if attempt is not None:
            summary = replace(
                summary,
                last_attempt_at=attempt.started_at,
                last_attempt_status=_attempt_outcome(attempt.status),
            )
        if success is not None:
            summary = replace(
                summary,
                last_success_at=success.finished_at or success.started_at,
                last_success_size_bytes=success.size_bytes,
                last_success_duration_s=success.duration_s,
            )
        if drilled is not None:
            summary = replace(
                summary,
                last_verification_at=drilled.verified_at,
                last_verification_status=verdict(drilled.verify_status),
            )
        result[name] = summary
    return result
