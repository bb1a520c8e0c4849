"""The bounded job pool: backups, verifications and prunes run here.

At most ``max_parallel_jobs`` jobs run at once and at most one per target; a job for a busy
target waits in the queue (a verification due while that target's backup runs starts after
it).  Asking for a job that is already queued or running for the same target and kind returns
that job instead of a duplicate.  A job's failure is an outcome: recorded on the job, logged
with one summary line, never fatal to the daemon.  On shutdown queued jobs are dropped,
running ones are asked to stop through their cancel event and waited for.

Each job runs a function ``fn(job) -> JobResult`` looked up by kind; the function reads its
config snapshot from ``job.config`` (a reload never changes a running job's config) and returns
the typed outcome of its kind, which the job keeps in ``result``.  :meth:`Job.as_dict` is the
one place a job, its outcome included, becomes JSON (through the outcome's own ``as_dict``).
"""

from __future__ import annotations

import enum
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from pgwarden.backup.take import BackupOutcome
from pgwarden.config import Config
from pgwarden.config.kinds import JobKind
from pgwarden.errors import BusyError, PgwardenError, describe_unexpected
from pgwarden.logsetup import get_logger
from pgwarden.redaction import redact
from pgwarden.restore.outcome import VerifyOutcome
from pgwarden.retention.prune import PruneOutcome
from pgwarden.service.fanout import FanOutOutcome
from pgwarden.service.offsite_job import OffsiteJobOutcome

log = get_logger("pgwarden.jobs")

HISTORY = 200


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


class Trigger(enum.StrEnum):
    """Why a job was queued."""

    MANUAL = "manual"  # ctl, or a caller of Service.submit
    SCHEDULED = "scheduled"
    CATCH_UP = "catch-up"  # the one run owed after downtime
    AFTER_BACKUP = "after-backup"  # the verify or prune a successful backup leads to


#: what a job function returns: its kind's outcome (``None`` only when it has none to give)
JobResult = BackupOutcome | VerifyOutcome | PruneOutcome | OffsiteJobOutcome | FanOutOutcome | None
JobFunction = Callable[["Job"], JobResult]


@dataclass
class Job:
    kind: JobKind
    target: str
    config: Config
    args: dict[str, Any] = field(default_factory=dict)
    trigger: Trigger = Trigger.MANUAL
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    state: JobState = JobState.QUEUED
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    started_at: datetime | None = None
    finished_at: datetime | None = None
    progress: dict[str, Any] = field(default_factory=dict)
    result: JobResult = None
    error: str | None = None
    error_code: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    version: int = 0
    _changed: threading.Condition = field(default_factory=threading.Condition)
    _started_mono: float = 0.0

    def __post_init__(self) -> None:
        # callers may name a kind, state or trigger by its plain string
        self.kind = JobKind(self.kind)
        self.state = JobState(self.state)
        self.trigger = Trigger(self.trigger)

    def report(self, **fields: Any) -> None:
        """Update progress (phase, bytes, ...) and wake anyone following the job."""
        with self._changed:
            self.progress.update(fields)
            if self._started_mono:
                elapsed = time.monotonic() - self._started_mono
                self.progress["elapsed_s"] = round(elapsed, 3)
                if "bytes" in self.progress and elapsed > 0:
                    self.progress["rate_bps"] = int(self.progress["bytes"] / elapsed)
            self.version += 1
            self._changed.notify_all()

    def _set_state(self, state: JobState) -> None:
        with self._changed:
            self.state = state
            self.version += 1
            self._changed.notify_all()

    def wait_change(self, seen_version: int, timeout: float) -> int:
        """Block until the job changes after ``seen_version`` (or timeout); the new version."""
        with self._changed:
            self._changed.wait_for(lambda: self.version != seen_version, timeout=timeout)
            return self.version

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    def as_dict(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "id": self.id,
            "kind": self.kind,
            "target": self.target,
            "trigger": self.trigger,
            "args": dict(self.args),  # the options it was asked with (tags, priority, ...)
            "state": self.state,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "progress": dict(self.progress),
            "result": self.result.as_dict() if self.result is not None else {},
            "error": self.error,
            "error_code": self.error_code,
        }


def _log_summary(result: JobResult) -> dict[str, Any]:
    """The outcome's facts worth the job's one summary log line."""
    if isinstance(result, BackupOutcome):
        summary = {"size_bytes": result.size_bytes, "backup_id": result.backup_id}
        return {**summary, "priority": str(result.priority)}
    if isinstance(result, VerifyOutcome):
        return {"backup_id": result.backup_id}
    if isinstance(result, OffsiteJobOutcome):
        uploads = result.uploads
        return {"uploaded": sum(c.ok for c in uploads.copies), "size_bytes": uploads.uploaded_bytes}
    return {}


class JobRunner:
    def __init__(
        self,
        functions: Mapping[JobKind, JobFunction],
        max_parallel: int,
        on_finish: Callable[[Job], None] | None = None,
    ) -> None:
        self._functions = dict(functions)
        self._max_parallel = max_parallel
        self._on_finish = on_finish
        self._lock = threading.Condition()
        self._queue: list[Job] = []
        self._running: dict[str, Job] = {}  # target -> job
        self._history: list[Job] = []
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self.crashed: BaseException | None = None

    # -- control ---------------------------------------------------------------------------
    def start(self) -> None:
        self.set_max_parallel(self._max_parallel)

    def set_max_parallel(self, value: int) -> None:
        """Grow the pool on reload (shrinking takes effect by idling extra workers)."""
        with self._lock:
            self._max_parallel = value
            while len(self._threads) < value:
                index = len(self._threads)
                thread = threading.Thread(
                    target=self._worker, args=(index,), name=f"job-{index}", daemon=True
                )
                self._threads.append(thread)
                thread.start()

    def alive(self) -> bool:
        return self.crashed is None and all(t.is_alive() for t in self._threads)

    def submit(self, job: Job) -> Job:
        """Queue ``job``; or the same target's queued or running job of its kind."""
        return self.offer(job)[0]

    def offer(self, job: Job) -> tuple[Job, bool]:
        """Like :meth:`submit`; also whether an existing job was returned instead."""
        if job.kind not in self._functions:
            raise PgwardenError(f"unknown job kind {job.kind!r}")
        with self._lock:
            if self._stopping:
                raise BusyError("the daemon is shutting down and takes no new jobs")
            for other in [*self._queue, *self._running.values()]:
                if other.target == job.target and other.kind == job.kind:
                    return other, True
            self._queue.append(job)
            self._lock.notify_all()
        log.info("job queued", job_id=job.id, kind=job.kind, target=job.target, trigger=job.trigger)
        return job, False

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            for job in [*self._queue, *self._running.values(), *self._history]:
                if job.id == job_id:
                    return job
        return None

    def jobs(self) -> list[Job]:
        with self._lock:
            return [*self._running.values(), *self._queue, *reversed(self._history[-20:])]

    def running_count(self) -> dict[JobKind, int]:
        with self._lock:
            counts: dict[JobKind, int] = {}
            for job in self._running.values():
                counts[job.kind] = counts.get(job.kind, 0) + 1
            return counts

    def busy_targets(self) -> set[str]:
        with self._lock:
            return set(self._running)

    def shutdown(self, timeout: float) -> bool:
        """Stop taking jobs, drop the queue, wait ``timeout`` then cancel; True if all ended."""
        with self._lock:
            self._stopping = True
            dropped, self._queue = self._queue, []
            self._lock.notify_all()
        for job in dropped:
            job.error = "dropped at shutdown"
            job._set_state(JobState.CANCELLED)
        deadline = time.monotonic() + timeout
        with self._lock:
            self._lock.wait_for(lambda: not self._running, timeout=timeout)
            running = list(self._running.values())
        for job in running:
            log.warning("aborting job at shutdown", job_id=job.id, kind=job.kind, target=job.target)
            job.cancel.set()
        grace = max(10.0, deadline - time.monotonic())
        with self._lock:
            self._lock.wait_for(lambda: not self._running, timeout=grace)
            return not self._running

    # -- workers ---------------------------------------------------------------------------
    def _next(self, index: int) -> Job | None:
        with self._lock:
            while True:
                if self._stopping:
                    return None
                if index < self._max_parallel:
                    for job in self._queue:
                        if job.target not in self._running:
                            self._queue.remove(job)
                            self._running[job.target] = job
                            return job
                self._lock.wait(timeout=1.0)

    def _worker(self, index: int) -> None:
        try:
            while (job := self._next(index)) is not None:
                self._run(job)
        except BaseException as exc:  # pragma: no cover - a bug in the runner itself
            self.crashed = exc
            log.exception("job worker crashed")
            raise

    def _run(self, job: Job) -> None:
        job.started_at = datetime.now(UTC)
        job._started_mono = time.monotonic()
        job._set_state(JobState.RUNNING)
        with structlog.contextvars.bound_contextvars(
            target=job.target, job_id=job.id, kind=job.kind
        ):
            state = JobState.FAILED
            try:
                job.result = self._functions[job.kind](job)
                state = JobState.CANCELLED if job.cancel.is_set() else JobState.SUCCEEDED
            except PgwardenError as exc:
                job.error, job.error_code = redact(str(exc)), exc.code
                state = JobState.CANCELLED if job.cancel.is_set() else JobState.FAILED
            except Exception as exc:
                job.error, job.error_code = describe_unexpected(exc), "internal"
                log.exception("job raised an unexpected error")
            job.finished_at = datetime.now(UTC)
            duration = time.monotonic() - job._started_mono
            log.info(
                "job finished",
                outcome=state,
                duration_s=round(duration, 3),
                error=job.error,
                **_log_summary(job.result),
            )
        with self._lock:
            self._running.pop(job.target, None)
            self._history.append(job)
            del self._history[:-HISTORY]
            self._lock.notify_all()
        job._set_state(state)
        if self._on_finish is not None:
            try:
                self._on_finish(job)
            except BusyError as exc:  # shutting down, or the queue is full: no traceback
                log.warning("job follow-up not queued", job_id=job.id, reason=str(exc))
            except Exception:
                log.exception("job follow-up failed", job_id=job.id)
