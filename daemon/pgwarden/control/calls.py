"""What a control command handler sees: a :class:`Call` — the service's
:class:`~pgwarden.control.api.DaemonApi`, the request's arguments, an ``emit`` for events and
the peer.  :func:`follow` streams a job's progress to the client.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pgwarden.control.api import DaemonApi, JobView
from pgwarden.control.protocol import Args, Peer

PROGRESS_MIN_INTERVAL = 0.25  # seconds between two byte-count events of one job
HEARTBEAT = 5.0  # a progress event at least this often while waiting

Emit = Callable[[str, dict[str, Any]], None]


@dataclass
class Call:
    """One request as its handler sees it."""

    api: DaemonApi
    args: Args
    emit: Emit  # send an event (``progress``) before the answer
    peer: Peer


Handler = Callable[[Call], dict[str, Any]]


def _progress(job: JobView) -> dict[str, Any]:
    data: dict[str, Any] = {"job": job.id, "kind": job.kind, "target": job.target}
    data.update(job.progress)
    data["state"] = job.state
    if job.started_at is not None:
        end = job.finished_at or datetime.now(UTC)
        data["elapsed_s"] = round((end - job.started_at).total_seconds(), 3)
    return data


def follow(call: Call, job: JobView) -> None:
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
