"""Retention of off-site copies: the local planner, applied to what a destination holds.

The remote keeps its own policy (``[offsite.retention]``) under the same invariants as the
local store: never the newest verified copy, never below ``min_keep``, pins respected,
``pre-migration`` copies at least 7 days.  An object is deleted before its manifest (a
manifest without object is recognisable; an object without manifest is an orphan), and on a
versioned bucket every version pgwarden created is deleted so the space is really freed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class RemoteInventory:
    """What a destination holds for one target after the run."""

    destination: str
    target: str
    copies: int  # complete copies (object + manifest)
    stored_bytes: int  # every object under the target's prefix, manifests included
    oldest_started: datetime | None
    newest_started: datetime | None


@dataclass(frozen=True)
class RemotePruneOutcome:
    destination: str
    target: str
    deleted: tuple[str, ...]  # backup ids
    kept: tuple[str, ...]
    errors: tuple[str, ...]  # redacted
    inventory: RemoteInventory | None
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors
