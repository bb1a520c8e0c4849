"""Off-site copies, the upload side: a published local backup sent to each ``[[offsite]]``.

After the local publish, every local backup of a target that is not yet confirmed on a
destination is uploaded there (newest first): the artifact streamed from disk, through the age
stage when the destination encrypts, into an :class:`~pgwarden.storage.objects.ObjectStore`
upload; then the remote manifest (the local one plus an ``offsite`` section), last.  A copy is
confirmed only when both are stored; a failure is recorded and retried by the next run.  The
local backup never depends on the upload succeeding.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CopyResult:
    """One backup sent (or not) to one destination."""

    backup_id: str
    target: str
    destination: str
    key: str
    ok: bool
    size_bytes: int  # the object's size (ciphertext when encrypted); 0 when it failed early
    object_sha256: str | None
    encrypted: bool
    duration_s: float
    error: str | None  # redacted


@dataclass(frozen=True)
class UploadOutcome:
    """Every copy a run attempted for one target, per destination."""

    target: str
    copies: tuple[CopyResult, ...]
    unreachable: tuple[str, ...] = ()  # destinations that could not be reached at all

    @property
    def ok(self) -> bool:
        return not self.unreachable and all(c.ok for c in self.copies)
