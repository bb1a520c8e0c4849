"""What a backup is asked to do and what it reports: :class:`BackupRequest`, :class:`BackupOutcome`.

A request carries the target, the config snapshot the job started with, the catalog and the
storage, the tags, a cancel event and the callbacks (progress, the pg_dump found, the space
check) through which the daemon keeps its metrics and job status, and the CPU and I/O
priority the run is to take (:mod:`pgwarden.pg.priority`; :func:`run_request` runs the work at
it; the outcome says which it ran at).  Importable from :mod:`pgwarden.backup.take` as well.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar, cast

from pgwarden.catalog import Catalog
from pgwarden.config import Config, TargetConfig
from pgwarden.pg.binaries import Tool
from pgwarden.pg.priority import Priority, resolve, run_at
from pgwarden.storage import Storage

Progress = Callable[..., None]
T = TypeVar("T")


@dataclass(frozen=True)
class BackupOutcome:
    backup_id: str
    target: str
    path: Path
    manifest_path: Path
    size_bytes: int
    sha256: str
    duration_s: float
    format: str
    compression: str
    tables: int
    attempt: int
    priority: Priority = Priority.NORMAL  # what pg_dump and the stages ran at
    max_rate: int = 0  # the read-rate cap on pg_dump's output, bytes/s; 0: none

    def as_dict(self) -> dict[str, Any]:
        return {
            "backup_id": self.backup_id,
            "target": self.target,
            "path": str(self.path),
            "manifest": str(self.manifest_path),
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "duration_s": round(self.duration_s, 3),
            "format": self.format,
            "compression": self.compression,
            "tables": self.tables,
            "attempt": self.attempt,
            "priority": str(self.priority),
            "max_rate": self.max_rate,
        }


@dataclass
class BackupRequest:
    target: TargetConfig
    config: Config
    catalog: Catalog
    storage: Storage
    tags: tuple[str, ...] = ("manual",)
    cancel: threading.Event | None = None
    progress: Progress | None = None
    on_tool: Callable[[Tool | None], None] | None = None  # pg_dump found (or not): for metrics
    on_space: Callable[[bool, int], None] | None = None  # space check result, free bytes
    priority: Priority = Priority.NORMAL  # CPU and I/O priority of pg_dump and the stages

    def report(self, **fields: Any) -> None:
        if self.progress is not None:
            self.progress(**fields)

    @property
    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()


def request_priority(target: TargetConfig, tags: tuple[str, ...], given: str | None) -> Priority:
    """``given`` (a CLI ``--priority``) or the target's ``[targets.backup] priority``; ``auto``
    is low for a scheduled (or catch-up) run, the ones tagged ``scheduled``."""
    return resolve(given or target.backup.priority, scheduled="scheduled" in tags)


def run_request(request: BackupRequest, work: Callable[[BackupRequest], T]) -> T:
    """``work(request)`` at ``request.priority`` (on a fresh thread when low, see
    :func:`pgwarden.pg.priority.run_at`); a :class:`BackupOutcome` says which it ran at."""
    result = run_at(
        request.priority,
        lambda: work(request),
        cancel=request.cancel,
        name=f"backup-{request.priority}",
    )
    if isinstance(result, BackupOutcome):
        rate = request.target.backup.max_rate
        return cast(T, replace(result, priority=request.priority, max_rate=rate))
    return result
