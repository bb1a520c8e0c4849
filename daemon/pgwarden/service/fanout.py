"""A daemon job on a whole-server target only fans out: :class:`FanOutOutcome`.

A whole-server target ``vps1`` (``databases = ...``) is scheduled like any target, but its
work is done per database by ordinary jobs on the sub-targets ``vps1/<database>``, queued as
follow-ups (:func:`pgwarden.service.jobkinds.follow_ups`): each has its own outcome, catalog
rows, metrics (``target="vps1/<database>"``), notifications and follow-ups (prune, drill after
backup, off-site).  The fanning job itself:

- ``backup``: lists the databases selected now and writes the globals once
  (:func:`pgwarden.backup.server.prepare_server_run`), then queues one backup per database;
- ``prune`` and ``offsite``: one job per database the catalog has backups of -- a dropped
  database's included, so its backups stay under the same rules;
- ``verify``: the drill rotates: one drill, of the database whose last drill is the oldest
  (never drilled first).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pgwarden.config.kinds import JobKind


@dataclass(frozen=True)
class FanOutOutcome:
    kind: JobKind
    target: str
    sub_targets: tuple[str, ...]
    globals_path: str | None = None
    excluded: tuple[str, ...] = ()
    unnamable: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "target": self.target,
            "sub_targets": list(self.sub_targets),
            "globals": self.globals_path,
            "excluded": list(self.excluded),
            "unnamable": list(self.unnamable),
        }
