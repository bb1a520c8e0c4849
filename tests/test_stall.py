"""Stalled runs are cancelled (issue 16, item 9): a dump or a restore that makes no progress for
``stall_timeout`` fails with that reason, leaves nothing behind and is counted.

Real stalls: another session holds ``ACCESS EXCLUSIVE`` on a table, so ``pg_dump`` (or
``pg_restore``) waits on the lock and moves nothing.  And the opposite: an index build that
takes longer than ``stall_timeout`` (an expression index over an immutable SQL function that
sleeps) reads nothing from the archive but works, and is *not* a stall.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from pgwarden.config.kinds import JobKind
from pgwarden.metrics import Metrics
from pgwarden.service.clock import SystemClock
from pgwarden.service.core import Service
from pgwarden.service.jobkinds import follow_ups, job_functions
from pgwarden.service.jobs import Job, JobState
from pgwarden.service.state import ServiceState
from tests.helpers import Env, make_config, open_env, target_doc
from tests.pgservers import PgServer
from tests.sampledata import make_sample_db
from tests.test_backup_faults import table_locked

STALL_S = 2


def _env(workdir: Path, server: PgServer, db: str, fmt: str = "custom") -> Env:
    doc = target_doc(
        server,
        db,
        backup={"retries": 0, "format": fmt, "stall_timeout": STALL_S},
        verify={"stall_timeout": STALL_S, "jobs": 1},
    )
    return open_env(make_config(workdir, [doc]))


@contextlib.contextmanager
def _service(env: Env) -> Iterator[Service]:
    """The daemon's job runner with the real job functions, recording outcomes as it does."""
    state = ServiceState.open(env.config, Metrics())
    service = Service(
        env.config.source,
        state,
        job_functions(state),
        follow_ups,
        clock=SystemClock(),
        wake=threading.Event(),
    )
    state.metrics.init_target(env.config.targets[0].name)
    service.runner.start()
    try:
        yield service
    finally:
        service.runner.shutdown(30)
        state.close()


def _finish(job: Job, timeout: float = 120) -> Job:
    deadline = time.monotonic() + timeout
    seen = 0
    while not job.finished and time.monotonic() < deadline:
        seen = job.wait_change(seen, 1.0)
    assert job.finished, job.as_dict()
    return job


def _stalled_count(service: Service, target: str, kind: str) -> float | None:
    return service.state.metrics.registry.get_sample_value(
        "pgwarden_jobs_stalled_total", {"target": target, "kind": kind}
    )


def _tools_left() -> list[str]:
    names = []
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            if child.name() in ("pg_dump", "pg_restore", "psql"):
                names.append(child.name())
    return names


@pytest.mark.parametrize("fmt", ["custom", "directory"])
def test_a_dump_blocked_on_a_lock_is_cancelled_as_stalled(
    pg18: PgServer, workdir: Path, fmt: str
) -> None:
    db = f"stall_dump_{fmt}"
    make_sample_db(pg18, db, rows=200, vectors=False)
    env = _env(workdir, pg18, db, fmt)
    with _service(env) as service, table_locked(pg18, db, "documents"):
        assert _stalled_count(service, db, "backup") == 0
        job, _ = service.submit(JobKind.BACKUP, db)
        _finish(job)
        assert job.state == JobState.FAILED, job.as_dict()
        assert job.error_code == "stalled"
        assert job.error is not None
        assert job.error.startswith(f"stalled: no progress for {STALL_S} s while dumping"), (
            job.error
        )
        assert "Lock:relation" in job.error  # the reason: pg_dump's session waits on a lock
        assert _stalled_count(service, db, "backup") == 1
        assert _tools_left() == []
    rows = env.catalog.list_backups(db)
    assert [r.status for r in rows] == ["failed"]
    assert rows[0].error is not None and rows[0].error.startswith("stalled:")
    left = list(env.config.storage.path.rglob("*"))
    assert not [p for p in left if p.name.endswith(".partial")], left
    assert [p for p in left if p.is_file()] == []
