"""What a backup is asked to do and what it reports: :class:`BackupRequest`, :class:`BackupOutcome`.

A request carries the target, the config snapshot the job started with, the catalog and the
storage, the tags, a cancel event and the callbacks (progress, the pg_dump found, the space
check) through which the daemon keeps its metrics and job status.  Importable from
:mod:`pgwarden.backup.take` as well.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgwarden.catalog import Catalog
from pgwarden.config import Config, TargetConfig
from pgwarden.pg.binaries import Tool
from pgwarden.storage import Storage

Progress = Callable[..., None]


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

    def report(self, **fields: Any) -> None:
        if self.progress is not None:
            self.progress(**fields)

    @property
    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()
