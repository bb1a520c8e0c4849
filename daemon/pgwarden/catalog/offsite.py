"""The catalog's record of off-site copies: which backup is confirmed on which destination.

A copy is ``confirmed`` only when its object and its manifest are both in the bucket (the
manifest is uploaded last); ``failed`` keeps the last error (already redacted) so the next run
retries it; ``deleted`` when remote retention removed it.  The bucket holds the truth:
``catalog rebuild`` recreates confirmed rows from the remote manifests.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from pgwarden.catalog.queries import Catalog


class CopyState(enum.StrEnum):
    UPLOADING = "uploading"
    CONFIRMED = "confirmed"
    FAILED = "failed"
    DELETED = "deleted"


@dataclass(frozen=True)
class OffsiteCopyRecord:
    backup_id: str
    target: str
    destination: str
    key: str
    state: CopyState
    size_bytes: int | None
    object_sha256: str | None
    encrypted: bool
    uploaded_at: datetime | None
    attempts: int
    error: str | None


def record_copy(
    catalog: Catalog,
    *,
    backup_id: str,
    destination: str,
    key: str,
    state: CopyState,
    size_bytes: int | None = None,
    object_sha256: str | None = None,
    encrypted: bool = False,
    uploaded_at: datetime | None = None,
    error: str | None = None,
) -> OffsiteCopyRecord:
    """Create or update the row for (backup, destination); ``attempts`` counts UPLOADING."""
    raise NotImplementedError


def copies(
    catalog: Catalog, *, target: str | None = None, destination: str | None = None
) -> list[OffsiteCopyRecord]:
    """Every recorded copy (deleted ones included), oldest backup first."""
    raise NotImplementedError
