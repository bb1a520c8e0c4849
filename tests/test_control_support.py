"""Shared pieces of the control socket tests: a small real-object daemon and its fixtures.

``MiniDaemon`` is not a mock: a real :class:`JobRunner` running trivial job functions that
report progress and write real rows into a real (SQLite) catalog, a real config parsed from a
TOML file, a real scheduler and metrics registry, and a main-loop thread that applies reloads
the way :class:`pgwarden.service.daemon.Daemon` does.  What it leaves out is PostgreSQL: the
jobs do not dump anything.  The end-to-end test in ``test_control_e2e.py`` uses the real
daemon.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pgwarden import config as config_mod
from pgwarden.catalog import open_catalog
from pgwarden.catalog.queries import Catalog
from pgwarden.config import Config
from pgwarden.control.server import ControlServer
from pgwarden.errors import BackupError, ConfigError, PgwardenError
from pgwarden.metrics import Metrics
from pgwarden.service.jobs import Job, JobRunner
from pgwarden.service.scheduler import Scheduler
from pgwarden.storage import LocalStorage, backup_name, manifest_name

CANARY = "CANARY-pw-7f3a9c2e"
STEPS = 6  # progress reports per fake job
STEP_S = 0.05


def config_text(root: Path, *, mode: str = "0660", extra_daemon: str = "") -> str:
    """A config with three targets and a canary password in every place one can be."""
    return f"""
[daemon]
state_dir = "{root}/state"
socket = "{root}/ctl.sock"
socket_mode = "{mode}"
allow_plaintext_passwords = true
{extra_daemon}

[metrics]
enabled = false
basic_auth_user = "prom"
basic_auth_password_hash = "{CANARY}-hash"

[monitor]
enabled = false

[storage]
path = "{root}/backups"

[[targets]]
name = "app"
dsn = "postgresql://backup@localhost:5432/app"
password = "{CANARY}"
  [targets.verify]
  dsn = "postgresql://verifier:{CANARY}@localhost:5432/postgres"

[[targets]]
name = "shop"
dsn = "postgresql://backup:{CANARY}@localhost:5432/shop"

[[targets]]
name = "broken"
dsn = "host=localhost dbname=broken user=backup password={CANARY}"

[[pgbouncer]]
name = "bouncer"
dsn = "host=localhost port=6432 dbname=pgbouncer user=admin"
password = "{CANARY}"
"""


class MiniState:
    def __init__(self, config: Config, catalog: Catalog) -> None:
        self.config = config
        self.catalog = catalog
        self.storage = LocalStorage(config.storage.path)

    def check_reloadable(self, new: Config) -> None:
        if new.daemon.socket != self.config.daemon.socket:
            raise ConfigError(new.source, ["daemon.socket: changing it needs a restart"])


class MiniDaemon:
    """See the module docstring."""

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        config = config_mod.load(config_path)
        self.metrics = Metrics()
        self.metrics.start_time.set(time.time())
        self.paused: set[str] = set()
        self.state: MiniState | None = MiniState(
            config, open_catalog(config.daemon.effective_catalog_url)
        )
        self.scheduler: Scheduler | None = Scheduler(config, datetime.now(UTC))
        self.runner: JobRunner | None = JobRunner(
            {"backup": self._backup, "verify": self._verify, "prune": self._prune},
            config.daemon.max_parallel_jobs,
        )
        self.runner.start()
        self.gate = threading.Event()  # jobs wait for it when `hold` is set
        self.gate.set()
        self._reload = threading.Event()
        self._stop = threading.Event()
        self.loop = threading.Thread(target=self._loop, name="mini-main", daemon=True)
        self.loop.start()

    # -- the Daemon surface the control socket uses ----------------------------------------
    def submit(self, kind: str, target: str, args: dict[str, Any], trigger: str = "manual") -> Job:
        assert self.runner is not None
        assert self.state is not None
        config = self.state.config
        config.target(target)
        return self.runner.submit(Job(kind, target, config, args, trigger))

    def request_reload(self) -> None:
        self._reload.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self._reload.wait(0.05):
                self._reload.clear()
                self._apply_reload()

    def _apply_reload(self) -> None:
        assert self.state is not None
        assert self.scheduler is not None
        try:
            new = config_mod.load(self.config_path)
            self.state.check_reloadable(new)
        except PgwardenError:
            self.metrics.config_reloads.labels("failure").inc()
            return
        self.state.config = new
        self.scheduler.update(new, datetime.now(UTC))
        self.metrics.config_reloads.labels("success").inc()

    def close(self) -> None:
        self._stop.set()
        assert self.runner is not None
        assert self.state is not None
        self.runner.shutdown(5)
        self.state.catalog.close()

    # -- trivial job functions -------------------------------------------------------------
    def _steps(self, job: Job, phase: str) -> None:
        for i in range(STEPS):
            self.gate.wait(30)
            job.report(phase=phase, bytes=(i + 1) * 1_000_000)
            time.sleep(STEP_S)

    def _backup(self, job: Job) -> dict[str, Any]:
        assert self.state is not None
        if job.target == "broken":
            raise BackupError(f"pg_dump failed: password={CANARY} authentication failed")
        backup_id = uuid.uuid4().hex
        catalog, storage = self.state.catalog, self.state.storage
        started = datetime.now(UTC)
        name = backup_name(started, backup_id[:8], "dump")
        catalog.record_backup_start(
            backup_id,
            target=job.target,
            database=job.target,
            started_at=started,
            format="custom",
            tags=job.args.get("tags", ["manual"]),
        )
        self._steps(job, "dumping")
        folder = storage.target_dir(job.target)
        (folder / name).write_bytes(b"PGDMP")
        manifest = {"id": backup_id, "target": job.target, "pinned": False}
        storage.write_manifest_atomic(
            job.target, manifest_name(name), json.dumps(manifest).encode()
        )
        catalog.record_backup_finish(
            backup_id,
            status="complete",
            finished_at=datetime.now(UTC),
            size_bytes=STEPS * 10**6,
            sha256="0" * 64,
            path=f"{job.target}/{name}",
        )
        return {"backup_id": backup_id, "size_bytes": STEPS * 10**6}

    def _verify(self, job: Job) -> dict[str, Any]:
        self._steps(job, "restoring")
        assert self.state is not None
        ref = job.args.get("backup")
        backup = (
            self.state.catalog.get_backup(ref)
            if ref
            else self.state.catalog.list_backups(job.target, statuses=("complete",))[0]
        )
        checks = [
            {"name": "restore exit status", "passed": True, "detail": "pg_restore 0"},
            {"name": "row counts", "passed": True, "detail": "2 tables equal"},
        ]
        return {"backup_id": backup.id, "status": "passed", "checks": checks}

    def _prune(self, job: Job) -> dict[str, Any]:
        assert self.state is not None
        plan = [
            {"id": b.short_id, "decision": "keep", "reason": "within keep_days"}
            for b in self.state.catalog.list_backups(job.target, statuses=("complete",))
        ]
        return {"dry_run": bool(job.args.get("dry_run")), "plan": plan, "deleted": 0}


# -- fixtures and helpers ------------------------------------------------------------------
def short_dir() -> Path:
    """A short, traversable temp dir (Unix socket paths are limited to 107 bytes)."""
    root = Path(tempfile.mkdtemp(prefix="pgw-", dir="/tmp"))
    root.chmod(0o755)
    return root


def write_config(root: Path, **kwargs: str) -> Path:
    path = root / "pgwarden.toml"
    path.write_text(config_text(root, **kwargs))
    path.chmod(0o600)
    return path


class Harness:
    def __init__(self, root: Path, **kwargs: Any) -> None:
        self.root = root
        self.config_path = write_config(root, **{k: v for k, v in kwargs.items() if k != "server"})
        self.daemon = MiniDaemon(self.config_path)
        assert self.daemon.state is not None
        self.socket = self.daemon.state.config.daemon.socket
        self.server = ControlServer(
            self.daemon, self.daemon.state.config.daemon, **kwargs.get("server", {})
        )
        try:
            self.server.start()
        except BaseException:
            self.daemon.close()
            raise

    def close(self) -> None:
        self.server.stop()
        self.daemon.close()


@pytest.fixture
def harness() -> Iterator[Harness]:
    root = short_dir()
    h = Harness(root)
    try:
        yield h
    finally:
        h.close()
        shutil.rmtree(root, ignore_errors=True)


def raw_exchange(path: Path, payload: bytes, timeout: float = 15.0) -> list[dict[str, Any]]:
    """Send bytes, half-close, read every answer line until the daemon closes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def request_line(cmd: str, args: dict[str, Any] | None = None, rid: Any = 1) -> bytes:
    return json.dumps({"id": rid, "cmd": cmd, "args": args or {}}).encode() + b"\n"


def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def no_canary(blob: str | bytes) -> None:
    text = blob.decode() if isinstance(blob, bytes) else blob
    assert CANARY not in text


def uid_of(name: str) -> int:
    return pwd.getpwnam(name).pw_uid


def is_root() -> bool:
    return os.geteuid() == 0
