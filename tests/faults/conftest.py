"""Pieces shared by the faults suite: the seed, a real ``pgwarden run`` process that a test can
SIGKILL and restart, and the checks run after every fault (storage, catalog, scratch databases).

The seed comes from ``PGWARDEN_FAULT_SEED`` or is drawn at random; every assertion message of
the suite carries it, so that a failing run can be replayed exactly.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import psutil
import pytest

from pgwarden.catalog import BackupRecord, BackupStatus, DrillStatus, open_catalog
from pgwarden.control.client import ControlClient
from tests.pgservers import PgServer, free_port

MANIFEST = ".manifest.json"
SCRATCH_LIKE = "pgwarden\\_verify\\_%"
TERMINAL = ("succeeded", "failed", "cancelled", "interrupted")


@pytest.fixture
def fault_seed(request: pytest.FixtureRequest) -> int:
    """The seed of this test's randomness (``PGWARDEN_FAULT_SEED`` replays a run)."""
    given = os.environ.get("PGWARDEN_FAULT_SEED")
    seed = int(given) if given else random.randrange(2**32)
    print(f"{request.node.nodeid}: PGWARDEN_FAULT_SEED={seed}")
    return seed


def config_text(
    workdir: Path,
    server: PgServer,
    db: str,
    *,
    storage: Path | None = None,
    extra_target: str = "",
    backup_keys: str = "",
) -> str:
    """A daemon config with one target ``db``: no retry, a retention that never deletes, no
    monitor, schedules that do not fire during a test, JSON logs."""
    return f"""
[daemon]
state_dir = "{workdir}/state"
socket = "{workdir}/ctl.sock"
shutdown_timeout = 2
log_format = "json"
catch_up = false

[metrics]
listen = "127.0.0.1:{free_port()}"

[monitor]
enabled = false

[storage]
path = "{storage or workdir / "backups"}"

[[targets]]
name = "{db}"
dsn = "{server.uri(db)}"
bin_dir = "{server.bin_dir}"
{extra_target}
  [targets.backup]
  schedule = "0 3 1 1 *"
  retries = 0
  {backup_keys}
  [targets.verify]
  schedule = "0 5 1 1 *"
  [targets.retention]
  keep_days = 36500
  min_keep = 1
"""


def _drain(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while sock.fileno() != -1:
            with contextlib.suppress(TimeoutError):
                sock.recv(4096)


class DaemonProcess:
    """``pgwarden run -c CONFIG`` as a child process, ready once it sent ``READY=1``."""

    def __init__(self, workdir: Path, config: Path) -> None:
        self.workdir = workdir
        self.config = config
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "daemon.log"
        self.client = ControlClient(workdir / "ctl.sock", timeout=60)
        self._notify_path = workdir / "notify.sock"
        self._notify: socket.socket | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 60) -> None:
        self._notify_path.unlink(missing_ok=True)
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(str(self._notify_path))
        self._notify.settimeout(0.5)
        # faulthandler: a daemon that does not stop is sent SIGABRT and dumps its threads
        env = {**os.environ, "NOTIFY_SOCKET": str(self._notify_path), "PYTHONFAULTHANDLER": "1"}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pgwarden.cli", "run", "-c", str(self.config)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the daemon exited at start-up: {self.log_tail()}"
            try:
                message = self._notify.recv(4096).decode()
            except TimeoutError:
                continue
            if "READY=1" in message.split("\n"):
                # keep reading, as systemd does: a full socket would block the daemon's sends
                threading.Thread(target=_drain, args=(self._notify,), daemon=True).start()
                return
        raise AssertionError(f"no READY=1 within {timeout} s: {self.log_tail()}")

    def kill(self) -> list[psutil.Process]:
        """SIGKILL the daemon; the children it had at that moment (its tools)."""
        assert self.proc is not None
        try:
            children = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(30)
        self._close_notify()
        return children

    def stop(self) -> None:
        """SIGTERM, as systemd stops it; exit 0 expected."""
        if self.proc is None or self.proc.poll() is not None:
            self._close_notify()
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)  # its threads' stacks go to the log
            self.proc.wait(30)
            self._close_notify()
            raise AssertionError(f"SIGTERM did not stop the daemon: {self.log_tail(80)}") from None
        self._close_notify()
        assert code == 0, f"the daemon exited {code}: {self.log_tail()}"

    def _close_notify(self) -> None:
        if self._notify is not None:
            self._notify.close()
            self._notify = None

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def submit(self, kind: str, target: str) -> str:
        """Ask for a job over the control socket; its id."""
        answer = self.client.call(kind, {"target": target})
        job = answer["job"] if "job" in answer else answer["jobs"][0]
        return str(job["id"])

    def job(self, job_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self.client.call("job", {"id": job_id})["job"]
        return found

    def wait_job(self, job_id: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.job(job_id)
            if found["state"] in TERMINAL:
                return found
            assert time.monotonic() < deadline, f"job {job_id} still {found['state']}"
            time.sleep(0.05)

    def wait_running(self, job_id: str, timeout: float = 60) -> dict[str, Any]:
        """The job once it left the queue (running, or already over)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.job(job_id)
            if found["state"] != "queued":
                return found
            assert time.monotonic() < deadline, f"job {job_id} never started"
            time.sleep(0.01)


@pytest.fixture
def daemon_process(workdir: Path) -> Iterator[DaemonProcess]:
    """A daemon on ``workdir/pgwarden.toml`` (written by the test before ``start``); killed at
    the end of the test whatever happened."""
    daemon = DaemonProcess(workdir, workdir / "pgwarden.toml")
    try:
        yield daemon
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.kill()


def write_config(workdir: Path, text: str) -> Path:
    path = workdir / "pgwarden.toml"
    path.write_text(text)
    path.chmod(0o600)
    return path


# -- the checks run after a fault -----------------------------------------------------------
@dataclass(frozen=True)
class StorageView:
    """What a storage directory holds, by file name."""

    manifests: frozenset[str]  # artifact names that have a manifest
    artifacts: frozenset[str]  # artifact names (files or dump directories)
    partials: tuple[str, ...]


def storage_view(root: Path) -> StorageView:
    manifests, artifacts, partials = set(), set(), []
    for target_dir in sorted(p for p in root.iterdir() if p.is_dir()) if root.exists() else []:
        for entry in target_dir.iterdir():
            name = entry.name
            if name.endswith(".partial"):
                partials.append(f"{target_dir.name}/{name}")
            elif name.endswith(MANIFEST):
                manifests.add(f"{target_dir.name}/{name.removesuffix(MANIFEST)}")
            else:
                artifacts.add(f"{target_dir.name}/{name}")
    return StorageView(frozenset(manifests), frozenset(artifacts), tuple(sorted(partials)))


def catalog_rows(workdir: Path) -> list[BackupRecord]:
    with open_catalog(f"sqlite:///{workdir}/state/catalog.db") as catalog:
        return catalog.list_backups()


def running_drills(workdir: Path) -> list[str]:
    """Drills the catalog still calls running (their backups' short ids)."""
    with open_catalog(f"sqlite:///{workdir}/state/catalog.db") as catalog:
        drills = catalog.list_verifications()
    return [d.backup_id[:8] for d in drills if d.status == DrillStatus.RUNNING]


def check_agreement(workdir: Path, storage: Path, context: str) -> StorageView:
    """No partial; every complete row has its artifact and manifest, every manifest a complete
    row, no artifact without a manifest, no row still ``running``."""
    view = storage_view(storage)
    assert view.partials == (), f"{context}: partials left: {view.partials}"
    rows = catalog_rows(workdir)
    running = [r.id[:8] for r in rows if r.status == BackupStatus.RUNNING]
    assert running == [], f"{context}: rows still running: {running}"
    drills = running_drills(workdir)
    assert drills == [], f"{context}: drills still running: {drills}"
    complete = {
        f"{r.target}/{PurePosixPath(r.path).name}"
        for r in rows
        if r.status == BackupStatus.COMPLETE
    }
    assert complete == set(view.manifests), (
        f"{context}: catalog complete {sorted(complete)} != manifests {sorted(view.manifests)}"
    )
    assert view.artifacts == view.manifests, (
        f"{context}: artifacts {sorted(view.artifacts)} != manifests {sorted(view.manifests)}"
    )
    return view


def scratch_databases(server: PgServer, target: str) -> list[str]:
    """``target``'s scratch databases on ``server`` (other tests' are not this test's business)."""
    pattern = SCRATCH_LIKE.removesuffix("%") + target.replace("_", "\\_") + "\\_%"
    rows = server.execute(f"SELECT datname FROM pg_database WHERE datname LIKE '{pattern}'")
    return sorted(str(r[0]) for r in rows)


def wait_no_scratch(server: PgServer, target: str, context: str, timeout: float = 30) -> None:
    """The start-up sweep drops scratch databases in the background: wait for it."""
    deadline = time.monotonic() + timeout
    while scratch_databases(server, target):
        assert time.monotonic() < deadline, (
            f"{context}: scratch databases left: {scratch_databases(server, target)}"
        )
        time.sleep(0.1)


def wait_gone(children: list[psutil.Process], context: str, timeout: float = 10) -> None:
    """The tools a killed daemon ran end within ``timeout`` seconds (EOF, broken pipe)."""
    _gone, alive = psutil.wait_procs(children, timeout=timeout)
    survivors = []
    for proc in alive:
        try:
            survivors.append(f"{proc.pid} {proc.name()} {proc.cmdline()[:3]}")
            proc.kill()
        except psutil.NoSuchProcess:
            continue
    assert survivors == [], f"{context}: children outlived the daemon by {timeout} s: {survivors}"
