"""What the control socket may ask of the running service, and the typed answers it gets.

:class:`DaemonApi` is the whole seam between ``control/`` and ``service/``: the control server
is given one object with these methods at construction
(:class:`pgwarden.service.api.ServiceApi` in the daemon) and never reaches past it — no job
runner, no scheduler, no catalog, no metrics registry.  The values exchanged are frozen
dataclasses and enums defined here, below the service, so that both sides can name them; a
running job is seen through the read-only :class:`JobView`.  Turning these values into the
socket's JSON is :mod:`pgwarden.control.commands`'s business; a job's own JSON (its outcome
included) is :meth:`JobView.as_dict`.

Errors are exceptions from :mod:`pgwarden.errors`: ``NotFoundError`` for an unknown target,
backup or job, ``BusyError`` for a conflicting job or a daemon still starting or stopping,
``UsageError`` for a refused pin; their ``code`` becomes the socket's ``error.code``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from pgwarden.catalog.offsite_summary import DestinationSummary
from pgwarden.catalog.records import BackupRecord, TargetSummary
from pgwarden.config import Config
from pgwarden.config.kinds import JobKind


class JobView(Protocol):
    """A job as the control socket follows it (read-only; the service's job changes)."""

    @property
    def id(self) -> str: ...

    @property
    def kind(self) -> JobKind: ...

    @property
    def target(self) -> str: ...

    @property
    def state(self) -> str: ...  # queued | running | succeeded | failed | cancelled

    @property
    def progress(self) -> Mapping[str, Any]: ...

    @property
    def started_at(self) -> datetime | None: ...

    @property
    def finished_at(self) -> datetime | None: ...

    @property
    def error(self) -> str | None: ...

    @property
    def version(self) -> int: ...  # grows with every change

    @property
    def finished(self) -> bool: ...

    def wait_change(self, seen_version: int, timeout: float) -> int:
        """Block until the job changes after ``seen_version`` (or timeout); the new version."""
        ...

    def as_dict(self) -> dict[str, Any]:
        """The job as JSON, its typed outcome serialized by the outcome's ``as_dict``."""
        ...


@dataclass(frozen=True)
class JobRequest:
    """A job asked for by an operator."""

    kind: JobKind
    target: str
    tags: tuple[str, ...] = ()  # backup: tags besides "manual"
    backup: str | None = None  # verify: a backup id or unique prefix (default: the newest)
    dry_run: bool = False  # prune: plan only
    destination: str | None = None  # offsite: one [[offsite]] name (default: every one)
    priority: str | None = None  # backup, verify: low | normal (default: the target's setting)


@dataclass(frozen=True)
class Submission:
    job: JobView
    existing: bool  # an identical job was already queued or running: that one is returned


@dataclass(frozen=True)
class PauseState:
    all: bool  # every target's schedules
    targets: frozenset[str]  # these targets' schedules (besides "all")

    def covers(self, target: str) -> bool:
        return self.all or target in self.targets


@dataclass(frozen=True)
class ConfigSnapshot:
    """The config in force, the file it came from and when it was loaded."""

    path: Path
    config: Config
    loaded_at: datetime


@dataclass(frozen=True)
class TargetStatus:
    name: str
    paused: bool
    next_runs: Mapping[JobKind, datetime]  # when each enabled schedule is next due
    summary: TargetSummary | None  # the catalog's history (None: no run yet, or no catalog)


@dataclass(frozen=True)
class DaemonStatus:
    started_at: datetime
    config: ConfigSnapshot
    paused: PauseState
    jobs: Sequence[JobView]  # running, queued, then the newest finished ones, newest first
    running: Mapping[JobKind, int]
    targets: Sequence[TargetStatus]
    catalog_error: str | None  # the catalog could not be read: summaries are missing
    #: each target's copies on each of its [[offsite]] destinations, in config order
    offsite: Sequence[DestinationSummary] = ()


class ReloadStatus(enum.StrEnum):
    APPLIED = "applied"
    REJECTED = "rejected"  # the file is invalid, or changes a restart-only setting
    PENDING = "pending"  # the main loop did not answer in time


@dataclass(frozen=True)
class ReloadResult:
    """The one answer to a reload, decided by the service that applied (or refused) it."""

    status: ReloadStatus
    config: ConfigSnapshot  # the config in force afterwards (the old one unless applied)
    error: str | None = None  # why it was rejected (every problem, with its key path)
    error_code: str | None = None  # the rejecting error's code ("config")
    notes: tuple[str, ...] = ()  # what the reload did besides the swap (monitor started...)

    @property
    def applied(self) -> bool:
        return self.status is ReloadStatus.APPLIED


class DaemonApi(Protocol):
    """Everything the control socket may ask of the running service."""

    def submit(self, request: JobRequest) -> Submission:
        """Queue a job (or join the identical one); ``BusyError`` if one with other
        options is queued or running, ``NotFoundError`` for an unknown target or backup."""
        ...

    def jobs(self) -> Sequence[JobView]:
        """Running, queued, then recently finished jobs."""
        ...

    def job(self, job_id: str) -> JobView | None: ...

    def status(self) -> DaemonStatus: ...

    def config(self) -> ConfigSnapshot: ...

    def reload(self, timeout: float) -> ReloadResult:
        """Re-read the config file and apply it; waits up to ``timeout`` for the answer."""
        ...

    def pause(self, target: str | None) -> PauseState:
        """Pause one target's schedules, or all (``None``)."""
        ...

    def resume(self, target: str | None) -> PauseState: ...

    def backups(self, target: str | None, *, include_deleted: bool) -> Sequence[BackupRecord]:
        """Backups in the catalog, newest first; ``NotFoundError`` for an unknown target."""
        ...

    def set_pin(self, target: str, backup: str, *, pinned: bool) -> BackupRecord:
        """Pin or unpin a backup (catalog and manifest, under the backup's lock)."""
        ...
