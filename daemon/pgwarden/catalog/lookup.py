"""Finding one backup's row from what an operator types: its id, a unique prefix of at least
4 hex digits, or its artifact name (``20240101T030000Z-1a2b3c4d.dump.zst``).

A reference that matches nothing raises :class:`NotFoundError`; one that matches several
backups raises :class:`UsageError` listing them.
"""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from pgwarden.catalog.manifest_facts import BACKUP_ID_RE
from pgwarden.catalog.models import Backup
from pgwarden.errors import NotFoundError, UsageError

_NAME_REF_RE = re.compile(r"^\d{8}T\d{6}Z-(?P<short>[0-9a-f]{4,32})(\..*)?$")
_MIN_PREFIX = 4


def backup_row(session: Session, ref: str, target: str | None = None) -> Backup:
    """The row ``ref`` names, of ``target`` when given."""
    ref = ref.strip()
    named = _NAME_REF_RE.match(ref)
    prefix = named["short"] if named else ref.lower()
    row = session.get(Backup, prefix) if BACKUP_ID_RE.match(prefix) else None
    if row is not None and (target is None or row.target == target):
        return row
    where = f" of target {target!r}" if target else ""
    if len(prefix) < _MIN_PREFIX or not re.fullmatch(r"[0-9a-f]+", prefix):
        raise NotFoundError(f"no backup {ref!r}{where} (give an id or its first 4+ digits)")
    query = select(Backup).where(Backup.id.startswith(prefix)).limit(10)
    if target is not None:
        query = query.where(Backup.target == target)
    rows = session.scalars(query).all()
    if not rows:
        raise NotFoundError(f"no backup {ref!r}{where}")
    if len(rows) > 1:
        ids = ", ".join(sorted(r.id[:12] for r in rows))
        raise UsageError(f"backup {ref!r} is ambiguous{where}: matches {ids}")
    return rows[0]
