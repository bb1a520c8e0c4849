"""Every file and directory pgwarden creates has the mode it documents (issue 16, faults suite).

The documented modes (README "Installing", "Backups: on disk", "Control socket", DESIGN.md):
the state directory 0700 and what is in it private (catalog file, locks, prune records: files
0600, directories 0700); storage: directories 0700, files 0600 (artifacts, manifests,
partials, restore spools); the control socket ``[daemon] socket_mode`` (here ``0660``) and
its lock 0600; the private directory of each tool run (0700) and its pgpass file (0600).

pgwarden must not depend on the umask for that: everything here runs under ``umask 000``, the
worst case (the unit sets ``UMask=0077``, a shell usually has ``022``).  A real daemon takes a
backup, runs a drill with ``jobs = 2`` (a restore spool) and a prune, then one-shot commands
run (backup, prune, ``catalog rebuild``); meanwhile a thread records the mode of every path
that appears under the test's folder (``TMPDIR`` points into it, so the tools' private
directories are seen too) every few milliseconds.  Each path seen must have its mode.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pgwarden.control.client import ControlClient
from tests.pgservers import PgServer, free_port
from tests.sampledata import make_sample_db
from tests.test_control_support import short_dir, wait_for

DB = "c2_modes"


@dataclass
class ModeWatcher:
    """Records (kind, mode) of every path under ``root`` until stopped."""

    root: Path
    seen: dict[Path, set[tuple[str, int]]] = field(default_factory=dict)
    passes: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            self.scan()
            self.passes += 1
            self.stop.wait(0.003)

    def scan(self) -> None:
        for folder, dirs, files in os.walk(self.root):
            for name in dirs + files:
                path = Path(folder, name)
                try:
                    st = path.lstat()
                except OSError:
                    continue  # gone meanwhile
                if stat.S_ISLNK(st.st_mode):
                    kind = "link"
                elif stat.S_ISDIR(st.st_mode):
                    kind = "dir"
                elif stat.S_ISSOCK(st.st_mode):
                    kind = "socket"
                else:
                    kind = "file"
                self.seen.setdefault(path, set()).add((kind, stat.S_IMODE(st.st_mode)))


def expected_mode(root: Path, path: Path, kind: str) -> int | None:
    """The documented mode of ``path``; None for what the test itself made."""
    rel = path.relative_to(root)
    top = rel.parts[0]
    if top in ("pgwarden.toml", "daemon.log", "tmp") and len(rel.parts) == 1:
        return None  # the test's own files, and the TMPDIR it made
    if top == "ctl.sock" or (kind == "socket" and top.startswith(".ctl.sock.")):
        return 0o660  # socket_mode, also under the temporary name it is bound to
    if kind == "dir":
        return 0o700
    return 0o600


@pytest.fixture(scope="module")
def modes_db(pg18: PgServer) -> str:
    make_sample_db(pg18, DB, rows=3000, vectors=False)
    return DB


def config_text(root: Path, server: PgServer, port: int) -> str:
    return f"""
[daemon]
state_dir = "{root}/state"
socket = "{root}/ctl.sock"
socket_mode = "0660"
shutdown_timeout = 10
log_format = "json"

[metrics]
listen = "127.0.0.1:{port}"

[monitor]
interval = 1

[storage]
path = "{root}/backups"

[[targets]]
name = "modes"
dsn = "{server.uri(DB)}"
password_env = "PGWARDEN_C2_MODES_PASSWORD"
bin_dir = "{server.bin_dir}"
  [targets.backup]
  retries = 0
  [targets.retention]
  keep_days = 1
  min_keep = 1
  [targets.verify]
  jobs = 2
  checks = [{{ name = "users exist", sql = "SELECT count(*) FROM users", min = 1 }}]
"""


def under_umask_000(argv: list[str], env: dict[str, str], **kwargs: object) -> list[str]:
    """``argv`` run by a shell with ``umask 000``."""
    del env, kwargs
    return ["sh", "-c", 'umask 000 && exec "$@"', "sh", *argv]


@pytest.fixture
def root() -> Iterator[Path]:
    folder = short_dir()
    try:
        yield folder
    finally:
        subprocess.run(["rm", "-rf", str(folder)], check=False)


def _hello(path: Path) -> bool:
    try:
        return ControlClient(path).call("hello")["server"] == "pgwarden"
    except Exception:  # not up yet
        return False


def test_everything_pgwarden_creates_has_its_documented_mode(
    pg18: PgServer, modes_db: str, root: Path
) -> None:
    assert modes_db == DB
    config = root / "pgwarden.toml"
    config.write_text(config_text(root, pg18, free_port()))
    config.chmod(0o600)
    tmp = root / "tmp"
    tmp.mkdir(mode=0o700)
    # trust auth ignores it, but pgwarden writes it to a pgpass file for every tool run
    env = {**os.environ, "TMPDIR": str(tmp), "PGWARDEN_C2_MODES_PASSWORD": "not-checked"}
    cli = [sys.executable, "-m", "pgwarden.cli"]
    watcher = ModeWatcher(root)
    thread = threading.Thread(target=watcher.run, name="mode-watcher", daemon=True)
    thread.start()
    log_path = root / "daemon.log"
    try:
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                under_umask_000([*cli, "run", "-c", str(config)], env),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        try:
            sock = root / "ctl.sock"
            wait_for(lambda: _hello(sock) or proc.poll() is not None, timeout=60)
            assert proc.poll() is None, log_path.read_text()
            client = ControlClient(sock)
            for cmd in ("backup", "backup", "verify", "prune"):
                final = list(client.stream(cmd, {"target": "modes", "wait": True}, timeout=180))
                data = final[-1].data
                jobs = data.get("jobs") or [data["job"]]
                assert all(j["state"] == "succeeded" for j in jobs), data
        finally:
            proc.terminate()
            proc.wait(30)
        for argv in (
            ["backup", "modes"],
            ["prune", "modes"],
            ["catalog", "rebuild"],
            ["backups", "modes"],
        ):
            done = subprocess.run(
                under_umask_000([*cli, *argv, "-c", str(config)], env),
                capture_output=True,
                text=True,
                timeout=180,
                env=env,
                check=False,
            )
            assert done.returncode == 0, done.stdout + done.stderr
    finally:
        watcher.stop.set()
        thread.join(10)
    watcher.scan()  # what is left at the end, once more

    wrong: list[str] = []
    kinds: set[str] = set()
    for path, observed in sorted(watcher.seen.items()):
        for kind, mode in observed:
            want = expected_mode(root, path, kind)
            if want is None:
                continue
            kinds.add(f"{path.relative_to(root).parts[0]}:{kind}")
            if mode != want:
                wrong.append(f"{path.relative_to(root)} ({kind}): {mode:04o}, want {want:04o}")
    assert not wrong, "\n".join(wrong)
    seen = {str(p.relative_to(root)) for p in watcher.seen}
    names = {Path(p).name for p in seen}
    # what must have been looked at, or the test proves little
    assert {"state", "backups", "ctl.sock", "ctl.sock.lock"} <= seen, sorted(seen)
    assert {"catalog.db", "locks", "prune", "modes.json", "modes"} <= names, sorted(names)
    assert any(n.endswith(".manifest.json") for n in names)
    assert any(n.endswith(".partial") and ".restore-" not in n for n in names)  # a backup
    assert any(".restore-" in n for n in names)  # the drill's spool (jobs = 2)
    assert any(n.startswith("pgwarden-tool-") for n in names)  # a tool's private directory
    assert "pgpass" in names  # ... and its password file
    print(f"file modes: {watcher.passes} scans, {len(seen)} paths checked ({sorted(kinds)})")
