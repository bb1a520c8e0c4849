"""The off-site job of one target: upload what is missing, prune each destination, take stock.

``backup`` and ``retention`` are independent siblings, so their composition lives here:
:func:`run_offsite` calls :func:`pgwarden.backup.offsite.upload_pending` (every complete local
backup not yet confirmed on a destination, newest first), then
:func:`pgwarden.retention.remote.prune_remote` per reachable destination (its own policy, pins
and verified backups from the catalog), and returns an :class:`OffsiteJobOutcome`.  The daemon
runs it as the job kind ``offsite`` (a follow-up of every successful backup, before the local
prune; ``ctl offsite TARGET``); ``pgwarden offsite sync`` runs the same function without a
daemon.  A failure fails the job (:class:`OffsiteFailed`, its message naming each destination
and cause, the outcome attached) and never touches a local backup.
"""

from __future__ import annotations

from dataclasses import dataclass

from pgwarden.backup.offsite import UploadOutcome
from pgwarden.errors import OffsiteError
from pgwarden.retention.remote import RemotePruneOutcome


@dataclass(frozen=True)
class OffsiteJobOutcome:
    """What one off-site run of a target did: the uploads, then each destination's prune."""

    target: str
    uploads: UploadOutcome
    prunes: tuple[RemotePruneOutcome, ...] = ()

    @property
    def ok(self) -> bool:
        return self.uploads.ok and all(p.ok for p in self.prunes)

    @property
    def destinations(self) -> tuple[str, ...]:
        """Every destination the run was about, in config order as met."""
        seen: dict[str, None] = {}
        for name in (
            *(c.destination for c in self.uploads.copies),
            *self.uploads.unreachable,
            *(p.destination for p in self.prunes),
        ):
            seen.setdefault(name, None)
        return tuple(seen)

    def problems(self) -> tuple[str, ...]:
        """One line per failure, each naming its destination (already redacted)."""
        lines = [f"{name}: unreachable" for name in self.uploads.unreachable]
        lines += [
            f"{c.destination}: upload of {c.backup_id[:8]} failed: {c.error}"
            for c in self.uploads.copies
            if not c.ok
        ]
        lines += [f"{p.destination}: remote prune: {e}" for p in self.prunes for e in p.errors]
        return tuple(lines)


class OffsiteFailed(OffsiteError):
    """The off-site job of a target failed; ``outcome`` says what happened per destination."""

    def __init__(self, outcome: OffsiteJobOutcome) -> None:
        self.outcome = outcome
        detail = "; ".join(outcome.problems()) or "failed"
        super().__init__(f"off-site copies of {outcome.target}: {detail}")
