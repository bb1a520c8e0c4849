"""The job pool: one job per target, a global limit, de-duplication, failures as outcomes,
shutdown that cancels what runs.  Real threads, real timing-free synchronisation."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from pgwarden.config import parse
from pgwarden.errors import BackupError
from pgwarden.service.jobs import Job, JobRunner

CONFIG = parse(
    {"targets": [{"name": n, "dsn": f"postgresql://u@h/{n}"} for n in ("a", "b", "c")]},
    Path("j.toml"),
)


class Gate:
    """Job functions that block until released, recording concurrency."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.running: list[tuple[str, str]] = []
        self.peak = 0
        self.peak_per_target: dict[str, int] = {}
        self.started = threading.Semaphore(0)

    def __call__(self, job: Job) -> dict[str, Any]:
        with self.lock:
            self.running.append((job.target, job.kind))
            self.peak = max(self.peak, len(self.running))
            same = sum(1 for t, _ in self.running if t == job.target)
            self.peak_per_target[job.target] = max(self.peak_per_target.get(job.target, 0), same)
        self.started.release()
        self.release.wait(30)
        with self.lock:
            self.running.remove((job.target, job.kind))
        if job.args.get("fail"):
            raise BackupError("planned failure")
        return {"ok": True}


def _wait_all(jobs: list[Job]) -> None:
    for job in jobs:
        version = 0
        while not job.finished:
            version = job.wait_change(version, 5)


def test_one_job_per_target_and_a_global_limit() -> None:
    gate = Gate()
    runner = JobRunner({"backup": gate, "verify": gate}, max_parallel=2)
    runner.start()
    jobs = [
        runner.submit(Job(kind, t, CONFIG))
        for t in ("a", "b", "c")
        for kind in ("backup", "verify")
    ]
    assert gate.started.acquire(timeout=10)
    assert gate.started.acquire(timeout=10)
    assert len(runner.busy_targets()) == 2
    gate.release.set()
    _wait_all(jobs)
    assert gate.peak == 2
    assert all(n == 1 for n in gate.peak_per_target.values())
    assert all(j.state == "succeeded" for j in jobs)
    runner.shutdown(5)


def test_duplicate_requests_return_the_queued_job() -> None:
    gate = Gate()
    runner = JobRunner({"backup": gate}, max_parallel=1)
    runner.start()
    first = runner.submit(Job("backup", "a", CONFIG))
    again = runner.submit(Job("backup", "a", CONFIG))
    assert again is first
    gate.release.set()
    _wait_all([first])
    runner.shutdown(5)


def test_failure_is_an_outcome_and_the_pool_survives() -> None:
    gate = Gate()
    gate.release.set()
    runner = JobRunner({"backup": gate}, max_parallel=1)
    runner.start()
    bad = runner.submit(Job("backup", "a", CONFIG, {"fail": True}))
    _wait_all([bad])
    assert bad.state == "failed"
    assert bad.error == "planned failure"
    assert bad.error_code == "backup_failed"
    good = runner.submit(Job("backup", "a", CONFIG))
    _wait_all([good])
    assert good.state == "succeeded"
    assert runner.alive()
    runner.shutdown(5)


def test_shutdown_cancels_running_and_drops_queued() -> None:
    def cooperative(job: Job) -> dict[str, Any]:
        job.report(phase="waiting")
        job.cancel.wait(30)
        return {}

    runner = JobRunner({"backup": cooperative}, max_parallel=1)
    runner.start()
    running = runner.submit(Job("backup", "a", CONFIG))
    queued = runner.submit(Job("backup", "b", CONFIG))
    version = 0
    while running.state != "running":
        version = running.wait_change(version, 5)
    assert runner.shutdown(0.2)
    assert running.state == "cancelled"
    assert queued.state == "cancelled"
    assert queued.error == "dropped at shutdown"
