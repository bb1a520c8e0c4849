"""Applying a manifest's facts to the catalog, the core of ``pgwarden catalog rebuild``.

The storage holds the truth: a manifest exists only for a published backup, so its row becomes
``complete`` whatever the catalog said before, with the manifest's facts.  Drills listed in the
manifest are added unless one with the same start time is recorded already, which makes a
rebuild idempotent.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from pgwarden.catalog.manifest_facts import ManifestFacts
from pgwarden.catalog.models import Backup, Verification
from pgwarden.catalog.states import BackupStatus


def apply_manifest_facts(session: Session, facts: ManifestFacts, path: str | None) -> Backup:
    """Create or refresh the row for ``facts``; ``pinned`` is kept unless the manifest says."""
    row = session.get(Backup, facts.id)
    if row is None:
        row = Backup(id=facts.id, pinned=False, attempt=1)
        session.add(row)
    row.target, row.database = facts.target, facts.database
    row.started_at, row.finished_at = facts.started_at, facts.finished_at
    row.status, row.deleted_at, row.error = BackupStatus.COMPLETE, None, None
    row.format, row.compression = facts.format, facts.compression
    row.tags = list(facts.tags)
    row.path = path or facts.path or row.path
    row.size_bytes, row.sha256 = facts.size_bytes, facts.sha256
    row.duration_s = facts.duration_s
    if row.duration_s is None and facts.finished_at is not None:
        row.duration_s = max(0.0, (facts.finished_at - facts.started_at).total_seconds())
    if facts.pinned is not None:
        row.pinned = facts.pinned
    session.flush()
    known = set(
        session.scalars(select(Verification.started_at).where(Verification.backup_id == facts.id))
    )
    for fact in facts.verifications:
        if fact.started_at not in known:
            session.add(
                Verification(
                    backup_id=facts.id,
                    started_at=fact.started_at,
                    finished_at=fact.finished_at,
                    status=fact.status,
                    details=fact.details,
                    error=fact.error,
                )
            )
    if facts.verified_at and (row.verified_at is None or facts.verified_at > row.verified_at):
        row.verified_at, row.verify_status = facts.verified_at, facts.verify_status
    session.flush()
    return row
