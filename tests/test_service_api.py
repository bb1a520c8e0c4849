"""The service's side of the control seam, without a socket: reload answered by the service
that applied or refused it, pauses changed from several threads at once, and ``[monitor]
enabled`` toggled by a reload.  A real :class:`Daemon` runs in-process (its targets point at
no server: nothing here needs PostgreSQL)."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pgwarden.control.api import PauseState, ReloadStatus
from pgwarden.service.daemon import Daemon
from tests.test_control_support import MiniDaemon, short_dir, write_config


def _config(root: Path, *, monitor: bool = False, name: str = "app") -> str:
    return f"""
[daemon]
state_dir = "{root}/state"
socket = "{root}/ctl.sock"

[metrics]
enabled = false

[monitor]
enabled = {"true" if monitor else "false"}
interval = 1

[storage]
path = "{root}/backups"

[[targets]]
name = "{name}"
dsn = "postgresql://backup@127.0.0.1:1/{name}"
"""


@dataclass
class Running:
    root: Path
    path: Path
    daemon: Daemon


@pytest.fixture
def running() -> Iterator[Running]:
    root = short_dir()
    path = root / "pgwarden.toml"
    path.write_text(_config(root))
    daemon = Daemon(path, install_signals=False)
    box: dict[str, int] = {}
    thread = threading.Thread(target=lambda: box.update(code=daemon.run()), name="daemon")
    thread.start()
    try:
        assert daemon.started.wait(60)
        yield Running(root, path, daemon)
    finally:
        daemon.request_stop()
        thread.join(60)
        shutil.rmtree(root, ignore_errors=True)
    assert box.get("code") == 0


def test_a_rejected_reload_is_answered_by_the_service(running: Running) -> None:
    """The answer is the service's own typed result: no counter is read to guess it."""
    api, root = running.daemon.api, running.root
    before = api.config()
    running.path.write_text(_config(root) + "\n[nonsense]\n")
    rejected = api.reload(10)
    assert rejected.status is ReloadStatus.REJECTED
    assert rejected.error_code == "config"
    assert rejected.error is not None
    assert "nonsense" in rejected.error
    assert rejected.config == before  # the old config stays in force, untouched
    # a setting bound at start-up: refused, with the reason
    running.path.write_text(_config(root).replace("ctl.sock", "other.sock"))
    restart_only = api.reload(10)
    assert restart_only.status is ReloadStatus.REJECTED
    assert "daemon.socket: changing it needs a restart" in (restart_only.error or "")
    # two callers at once: each gets the answer of a reload that read the file after it asked
    running.path.write_text(_config(root, name="web"))
    answers = []
    callers = [threading.Thread(target=lambda: answers.append(api.reload(10))) for _ in range(2)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(30)
    assert [a.status for a in answers] == [ReloadStatus.APPLIED] * 2
    assert [t.name for t in api.config().config.targets] == ["web"]
    assert api.config().loaded_at > before.loaded_at
    assert running.daemon.healthy()


def test_enabling_the_monitor_by_reload_starts_it_and_disabling_stops_it(
    running: Running,
) -> None:
    daemon, api = running.daemon, running.daemon.api
    assert "monitor" not in daemon.dead_threads()
    running.path.write_text(_config(running.root, monitor=True))
    started = api.reload(10)
    assert started.status is ReloadStatus.APPLIED
    assert started.notes == ("monitor started",)
    monitor = daemon._threads["monitor"]
    assert monitor.is_alive()
    running.path.write_text(_config(running.root, monitor=False))
    stopped = api.reload(10)
    assert stopped.notes == ("monitor stopped",)
    assert "monitor" not in daemon._threads
    monitor.join(30)  # its cycle against an unreachable server ends at once
    assert not monitor.is_alive()
    assert daemon.healthy()  # a thread stopped on purpose is not a dead thread
    # the same file again: nothing to start or stop
    assert api.reload(10).notes == ()


def test_pause_and_resume_from_two_threads() -> None:
    root = short_dir()
    mini = MiniDaemon(write_config(root))
    api = mini.api
    errors: list[BaseException] = []

    def toggle(target: str) -> None:
        try:
            for _ in range(2000):
                api.pause(target)
                api.resume(target)
                api.status()  # reads the pauses while the other thread changes them
            api.pause(target)
        except BaseException as exc:
            errors.append(exc)

    try:
        threads = [threading.Thread(target=toggle, args=(t,)) for t in ("app", "shop")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors
        assert api.status().paused == PauseState(False, frozenset({"app", "shop"}))
        # all paused, then one resumed: the others stay paused by name
        assert api.pause(None).all
        assert api.resume("app") == PauseState(False, frozenset({"shop", "broken"}))
        assert api.resume(None) == PauseState(False, frozenset())
    finally:
        mini.close()
        shutil.rmtree(root, ignore_errors=True)
