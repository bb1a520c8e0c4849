"""The restore drills' history inside a catalog session: starting and finishing a drill, and
the summary (``verified_at``, ``verify_status``) a passed or failed drill leaves on its backup.

:class:`~pgwarden.catalog.queries.Catalog` opens the session, checks its arguments and turns
rows into records; these functions only change rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from pgwarden.catalog.models import Backup, Verification
from pgwarden.catalog.states import VERIFY_STATUSES, DrillStatus
from pgwarden.errors import NotFoundError


def start_drill(
    session: Session,
    backup: Backup,
    started_at: datetime,
    details: Mapping[str, Any] | None = None,
) -> Verification:
    """A new ``running`` drill of ``backup`` (``details``: its run lock's name, say)."""
    drill = Verification(
        backup_id=backup.id,
        started_at=started_at,
        status=DrillStatus.RUNNING,
        details=dict(details or {}),
    )
    session.add(drill)
    session.flush()
    return drill


def finish_drill(
    session: Session,
    verification_id: int,
    *,
    status: DrillStatus,
    finished_at: datetime,
    details: Mapping[str, Any] | None,
    error: str | None,
) -> Verification:
    """Record a drill's outcome; ``passed``/``failed`` also update the backup's summary."""
    drill = session.get(Verification, verification_id)
    if drill is None:
        raise NotFoundError(f"no verification {verification_id}")
    drill.status, drill.finished_at, drill.error = status, finished_at, error
    drill.details = dict(details or {})
    if status in VERIFY_STATUSES:
        _update_verify_summary(session.get_one(Backup, drill.backup_id), drill)
    return drill


def _update_verify_summary(backup: Backup, drill: Verification) -> None:
    at = drill.finished_at or drill.started_at
    if backup.verified_at is None or at >= backup.verified_at:
        backup.verified_at, backup.verify_status = at, drill.status
