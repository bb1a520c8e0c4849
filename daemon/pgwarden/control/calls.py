"""What a control command handler sees: the daemon (:class:`DaemonView`), a :class:`Call`.

:class:`DaemonView` is the small surface of :class:`pgwarden.service.daemon.Daemon` that the
control socket relies on (checked by mypy against the real class); tests drive the socket
with a small real-object daemon that has the same surface.  :func:`follow` streams a job's
progress to the client; :class:`ConfigWatch` knows since when the config in force has been.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from pgwarden.catalog.queries import Catalog
from pgwarden.config import Config
from pgwarden.control.protocol import BUSY, Args, Peer, control_error
from pgwarden.metrics import Metrics
from pgwarden.service.jobs import Job, JobRunner
from pgwarden.service.scheduler import Scheduler
from pgwarden.storage import Storage

PROGRESS_MIN_INTERVAL = 0.25  # seconds between two byte-count events of one job
HEARTBEAT = 5.0  # a progress event at least this often while waiting


class StateView(Protocol):
    @property
    def config(self) -> Config: ...

    @property
    def catalog(self) -> Catalog: ...

    @property
    def storage(self) -> Storage: ...

    def check_reloadable(self, new: Config) -> None: ...


class DaemonView(Protocol):
    """What the control socket uses of :class:`pgwarden.service.daemon.Daemon`."""

    @property
    def config_path(self) -> Path: ...

    @property
    def paused(self) -> set[str]: ...

    @property
    def runner(self) -> JobRunner | None: ...

    @property
    def scheduler(self) -> Scheduler | None: ...

    @property
    def state(self) -> StateView | None: ...

    @property
    def metrics(self) -> Metrics: ...

    def submit(
        self, kind: str, target: str, args: dict[str, Any], trigger: str = "manual"
    ) -> Job: ...

    def request_reload(self) -> None: ...


class ConfigWatch:
    """When the config now in force was loaded: noticed by identity, within a server tick."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._config: Config | None = None
        self._at = datetime.now(UTC)

    def observe(self, config: Config) -> datetime:
        with self._lock:
            if config is not self._config:
                if self._config is not None:
                    self._at = datetime.now(UTC)
                self._config = config
            return self._at


Emit = Callable[[str, dict[str, Any]], None]


@dataclass
class Call:
    """One request as its handler sees it."""

    daemon: DaemonView
    args: Args
    emit: Emit  # send an event (``progress``) before the answer
    peer: Peer
    watch: ConfigWatch


Handler = Callable[[Call], dict[str, Any]]


def parts(daemon: DaemonView) -> tuple[JobRunner, StateView, Scheduler]:
    runner, state, scheduler = daemon.runner, daemon.state, daemon.scheduler
    if runner is None or state is None or scheduler is None:
        raise control_error(BUSY, "the daemon is still starting; try again in a moment")
    return runner, state, scheduler


def _progress(job: Job) -> dict[str, Any]:
    data: dict[str, Any] = {"job": job.id, "kind": job.kind, "target": job.target}
    data.update(job.progress)
    data["state"] = job.state
    if job.started_at is not None:
        end = job.finished_at or datetime.now(UTC)
        data["elapsed_s"] = round((end - job.started_at).total_seconds(), 3)
    return data


def follow(call: Call, job: Job) -> None:
    """Emit ``progress`` events until ``job`` has finished.

    A new phase or state is sent at once; byte counts at most every
    :data:`PROGRESS_MIN_INTERVAL`; a heartbeat every :data:`HEARTBEAT` when nothing changes.
    """
    observed, sent_version, last_sent, last_key = -1, -1, 0.0, None
    while True:
        finished = job.finished
        observed = job.version
        data = _progress(job)
        key = (data.get("phase"), data["state"])
        since = time.monotonic() - last_sent
        if (observed != sent_version and (key != last_key or since >= PROGRESS_MIN_INTERVAL)) or (
            since >= HEARTBEAT
        ):
            call.emit("progress", data)
            sent_version, last_sent, last_key, since = observed, time.monotonic(), key, 0.0
        if finished:
            return
        # wake on the next change (a new phase goes out at once), or when the throttle of a
        # pending update ends, or for the heartbeat
        pending = observed != sent_version
        wait = PROGRESS_MIN_INTERVAL - since if pending else HEARTBEAT - since
        job.wait_change(observed, timeout=max(0.0, wait))
