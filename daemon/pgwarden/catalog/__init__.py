"""The run-history catalog: SQLAlchemy models and queries; the schema is owned by Alembic.

Public surface: :func:`open_catalog` returns a :class:`Catalog` (thread-safe, one per
process); queries return frozen records, their states the enums :class:`BackupStatus` and
:class:`DrillStatus`.  The catalog indexes what storage holds and adds the history of failed
attempts and drills; ``catalog rebuild`` recreates it from manifests with
:meth:`Catalog.upsert_from_manifest` and :meth:`Catalog.mark_absent_deleted`.
"""

from __future__ import annotations

from pgwarden.catalog.db import open_catalog
from pgwarden.catalog.manifest_facts import ManifestFacts, read_manifest_facts
from pgwarden.catalog.migrator import head_revision, migrations_dir
from pgwarden.catalog.queries import INTERRUPTED_MESSAGE, Catalog
from pgwarden.catalog.records import BackupRecord, TargetSummary, VerificationRecord
from pgwarden.catalog.states import (
    BACKUP_STATUSES,
    DRILL_ENDINGS,
    FINISH_STATUSES,
    LIVE_STATUSES,
    VERIFICATION_STATUSES,
    VERIFY_STATUSES,
    BackupStatus,
    DrillStatus,
)

__all__ = [
    "BACKUP_STATUSES",
    "DRILL_ENDINGS",
    "FINISH_STATUSES",
    "INTERRUPTED_MESSAGE",
    "LIVE_STATUSES",
    "VERIFICATION_STATUSES",
    "VERIFY_STATUSES",
    "BackupRecord",
    "BackupStatus",
    "Catalog",
    "DrillStatus",
    "ManifestFacts",
    "TargetSummary",
    "VerificationRecord",
    "head_revision",
    "migrations_dir",
    "open_catalog",
    "read_manifest_facts",
]
