"""Building real configs, catalogs and storages for tests (no mocks: real files, real servers)."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from pgwarden.backup.take import BackupOutcome, BackupRequest, take_backup
from pgwarden.catalog import Catalog, open_catalog
from pgwarden.config import Config, parse
from pgwarden.metrics import Metrics
from pgwarden.metrics.http import MetricsServer
from pgwarden.service.clock import SystemClock
from pgwarden.service.core import Service
from pgwarden.service.jobkinds import follow_ups, job_functions
from pgwarden.service.jobs import Job
from pgwarden.service.state import ServiceState
from pgwarden.storage import LocalStorage
from tests.pgservers import PgServer


def target_doc(
    server: PgServer, dbname: str, name: str | None = None, **sections: Any
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": name or dbname,
        "dsn": server.uri(dbname),
        "bin_dir": str(server.bin_dir),
    }
    for key, value in sections.items():
        doc[key] = value
    return doc


def make_config(workdir: Path, targets: list[dict[str, Any]], **top: Any) -> Config:
    doc: dict[str, Any] = {
        "daemon": {
            "state_dir": str(workdir / "state"),
            "socket": str(workdir / "ctl.sock"),
            **top.pop("daemon", {}),
        },
        "storage": {"path": str(workdir / "backups"), **top.pop("storage", {})},
        "metrics": {"listen": "127.0.0.1:0", **top.pop("metrics", {})},
        "targets": targets,
        **top,
    }
    return parse(doc, workdir / "pgwarden.toml")


def write_config(workdir: Path, text: str) -> Path:
    path = workdir / "pgwarden.toml"
    path.write_text(text)
    path.chmod(0o600)
    return path


@dataclass
class Env:
    config: Config
    catalog: Catalog
    storage: LocalStorage

    def backup(self) -> BackupOutcome:
        """A real backup of the first target."""
        target = self.config.targets[0]
        return take_backup(BackupRequest(target, self.config, self.catalog, self.storage))


def target_env(
    workdir: Path,
    server: PgServer,
    db: str,
    *,
    backup: dict[str, Any] | None = None,
    verify: dict[str, Any] | None = None,
) -> Env:
    """One target ``db`` on ``server``, backups without retries."""
    doc = target_doc(server, db, backup={"retries": 0, **(backup or {})}, verify=verify or {})
    return open_env(make_config(workdir, [doc]))


def open_env(config: Config) -> Env:
    config.daemon.state_dir.mkdir(parents=True, exist_ok=True)
    return Env(
        config, open_catalog(config.daemon.effective_catalog_url), LocalStorage(config.storage.path)
    )


def daemon_config_text(
    workdir: Path, server: PgServer, db: str, port: int, *, shutdown_timeout: float = 5
) -> str:
    """A whole config file for a daemon with one target ``db`` on ``server``."""
    return f"""
[daemon]
state_dir = "{workdir}/state"
socket = "{workdir}/ctl.sock"
shutdown_timeout = {shutdown_timeout}
log_format = "json"

[metrics]
listen = "127.0.0.1:{port}"

[monitor]
interval = 1

[storage]
path = "{workdir}/backups"

[[targets]]
name = "{db}"
dsn = "{server.uri(db)}"
bin_dir = "{server.bin_dir}"
  [targets.backup]
  schedule = "0 3 * * *"
  retries = 0
  [targets.verify]
  schedule = "0 5 * * 0"
"""


def pipe_with(payload: bytes) -> tuple[BinaryIO, threading.Thread]:
    """The read end of a pipe (unbuffered, like a tool's stdout) that a thread fills with
    ``payload`` and then closes; and that thread."""
    read_fd, write_fd = os.pipe()

    def write() -> None:
        with open(write_fd, "wb") as out:
            out.write(payload)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return open(read_fd, "rb", buffering=0), thread


@contextlib.contextmanager
def job_service(env: Env, *, metrics_http: bool = False) -> Iterator[Service]:
    """The daemon's job runner with the real job functions, recording outcomes as it does;
    with ``metrics_http``, its metrics HTTP thread too (on a free loopback port)."""
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
    http = MetricsServer(state.metrics, "127.0.0.1", 0, lambda: True) if metrics_http else None
    if http is not None:
        http.start()
    service.runner.start()
    try:
        yield service
    finally:
        service.runner.shutdown(30)
        if http is not None:
            http.stop()
        state.close()


def finish_job(job: Job, timeout: float = 120) -> Job:
    """Wait until ``job`` has finished (assert that it did within ``timeout``)."""
    deadline = time.monotonic() + timeout
    seen = 0
    while not job.finished and time.monotonic() < deadline:
        seen = job.wait_change(seen, 1.0)
    assert job.finished, job.as_dict()
    return job
