"""Shared pieces of the control socket tests: a small real-object daemon and its fixtures.

``MiniDaemon`` is not a mock: the real :class:`~pgwarden.service.core.Service` (job pool,
scheduler, pauses, reload decisions) behind the real :class:`~pgwarden.service.api.ServiceApi`,
on a real (SQLite) catalog and a real config parsed from a TOML file, with a main-loop thread
that serves reload requests the way :class:`pgwarden.service.daemon.Daemon` does.  Only its job
functions are trivial: they report progress and write real rows and files, but dump nothing,
so PostgreSQL is left out (and no follow-up jobs are queued).  The end-to-end test in
``test_control_e2e.py`` uses the real daemon.
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
from pgwarden.backup.take import BackupOutcome
from pgwarden.config import Config
from pgwarden.config.kinds import JobKind
from pgwarden.control.server import ControlServer
from pgwarden.errors import BackupError
from pgwarden.metrics import Metrics
from pgwarden.restore.outcome import CheckResult, VerifyOutcome
from pgwarden.retention import plan as retention
from pgwarden.retention.prune import Entry, PruneOutcome
from pgwarden.service.api import ServiceApi
from pgwarden.service.clock import SystemClock
from pgwarden.service.core import Service
from pgwarden.service.jobkinds import FollowUp
from pgwarden.service.jobs import Job
from pgwarden.service.state import ServiceState
from pgwarden.storage import backup_name, manifest_name

CANARY = "CANARYpw7f3a9c2e"  # letters and digits: fits in a bcrypt hash too
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
basic_auth_password_hash = "$2b$04${CANARY}{"x" * (53 - len(CANARY))}"

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


def no_follow_ups(_config: Config, _job: Job) -> list[FollowUp]:
    return []


class MiniDaemon:
    """See the module docstring."""

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        config = config_mod.load(config_path)
        self.state = ServiceState.open(config, Metrics())
        self.wake = threading.Event()
        functions = {
            JobKind.BACKUP: self._backup,
            JobKind.VERIFY: self._verify,
            JobKind.PRUNE: self._prune,
        }
        self.service = Service(
            config_path,
            self.state,
            functions,
            no_follow_ups,
            clock=SystemClock(),
            wake=self.wake,
        )
        self.api = ServiceApi()
        self.api.attach(self.service)
        self.service.runner.start()
        self.gate = threading.Event()  # jobs wait for it when `hold` is set
        self.gate.set()
        self._stop = threading.Event()
        self.loop = threading.Thread(target=self._loop, name="mini-main", daemon=True)
        self.loop.start()

    @property
    def paused(self) -> set[str]:
        """The targets paused by name ("*" standing for all)."""
        state = self.service.pauses.state()
        return set(state.targets) | ({"*"} if state.all else set())

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self.wake.wait(0.05):
                self.wake.clear()
                if self.service.reloads.pending():
                    self.service.serve_reloads()

    def close(self) -> None:
        self._stop.set()
        self.service.runner.shutdown(5)
        self.state.close()

    # -- trivial job functions -------------------------------------------------------------
    def _steps(self, job: Job, phase: str) -> None:
        for i in range(STEPS):
            self.gate.wait(30)
            job.report(phase=phase, bytes=(i + 1) * 1_000_000)
            time.sleep(STEP_S)

    def _backup(self, job: Job) -> BackupOutcome:
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
        return BackupOutcome(
            backup_id=backup_id,
            target=job.target,
            path=folder / name,
            manifest_path=folder / manifest_name(name),
            size_bytes=STEPS * 10**6,
            sha256="0" * 64,
            duration_s=(datetime.now(UTC) - started).total_seconds(),
            format="custom",
            compression="none",
            tables=2,
            attempt=1,
        )

    def _verify(self, job: Job) -> VerifyOutcome:
        started = datetime.now(UTC)
        self._steps(job, "restoring")
        ref = job.args.get("backup")
        backup = (
            self.state.catalog.get_backup(ref)
            if ref
            else self.state.catalog.list_backups(job.target, statuses=("complete",))[0]
        )
        checks = [
            CheckResult("restore exit status", passed=True, detail="pg_restore 0"),
            CheckResult("row counts", passed=True, detail="2 tables equal"),
        ]
        finished = datetime.now(UTC)
        return VerifyOutcome(
            backup_id=backup.id,
            target=job.target,
            artifact=backup.path or "",
            status="passed",
            started_at=started,
            finished_at=finished,
            duration_s=(finished - started).total_seconds(),
            checks=checks,
        )

    def _prune(self, job: Job) -> PruneOutcome:
        entries = [
            Entry(b, retention.KEEP, "within keep_days", ("keep_days",))
            for b in self.state.catalog.list_backups(job.target, statuses=("complete",))
        ]
        dry_run = bool(job.args.get("dry_run"))
        return PruneOutcome(job.target, dry_run, datetime.now(UTC), entries=entries)


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
        self.socket = self.daemon.state.config.daemon.socket
        self.server = ControlServer(
            self.daemon.api, self.daemon.state.config.daemon, **kwargs.get("server", {})
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
