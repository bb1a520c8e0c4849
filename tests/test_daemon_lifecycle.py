"""``pgwarden run`` as systemd sees it: notify protocol, reload, graceful stop, fatal threads.

The test plays systemd: it binds its own datagram socket as ``NOTIFY_SOCKET``, sets
``WATCHDOG_USEC`` and reads what the real daemon process sends.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from pgwarden.control.client import ControlClient
from pgwarden.service.daemon import Daemon
from tests.helpers import daemon_config_text
from tests.pgservers import PgServer, free_port
from tests.sampledata import make_sample_db


class Systemd:
    """A notify socket and the messages read from it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.5)
        self.messages: list[str] = []

    def wait_for(self, field: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                message = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            self.messages.append(message)
            if field in message.split("\n"):
                return message
        raise AssertionError(f"no {field} within {timeout} s; got {self.messages}")

    def close(self) -> None:
        self.sock.close()


@contextmanager
def running_daemon(
    workdir: Path, text: str
) -> Iterator[tuple[subprocess.Popen[bytes], Systemd, Path]]:
    config = workdir / "pgwarden.toml"
    config.write_text(text)
    config.chmod(0o600)
    systemd = Systemd(workdir / "notify.sock")
    env = {**os.environ, "NOTIFY_SOCKET": str(systemd.path), "WATCHDOG_USEC": "1000000"}
    log = (workdir / "daemon.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgwarden.cli", "run", "-c", str(config)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield proc, systemd, config
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        systemd.close()


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def test_notify_reload_and_stop(pg18: PgServer, workdir: Path) -> None:
    make_sample_db(pg18, "life", rows=20, vectors=False)
    port = free_port()
    text = daemon_config_text(workdir, pg18, "life", port)
    with running_daemon(workdir, text) as (proc, systemd, config):
        ready = systemd.wait_for("READY=1")
        assert any(line.startswith("STATUS=") for line in ready.split("\n"))
        systemd.wait_for("WATCHDOG=1", timeout=5)
        systemd.wait_for("WATCHDOG=1", timeout=5)

        # a good reload: RELOADING=1 with MONOTONIC_USEC, then READY=1
        config.write_text(text.replace('schedule = "0 3 * * *"', 'schedule = "0 4 * * *"'))
        proc.send_signal(signal.SIGHUP)
        reloading = systemd.wait_for("RELOADING=1")
        assert any(line.startswith("MONOTONIC_USEC=") for line in reloading.split("\n"))
        systemd.wait_for("READY=1")
        client = ControlClient(workdir / "ctl.sock")
        shown = client.call("config")
        assert "0 4 * * *" in str(shown)

        # a broken reload: logged, counted, ignored; the old config stays in force
        config.write_text(text.replace("[monitor]", "[monitor]\nbogus_key = 1"))
        proc.send_signal(signal.SIGHUP)
        systemd.wait_for("RELOADING=1")
        systemd.wait_for("READY=1")
        assert proc.poll() is None
        assert "0 4 * * *" in str(client.call("config"))
        scrape = _scrape(port)
        assert 'pgwarden_config_reloads_total{result="failure"} 1.0' in scrape
        assert "pgwarden_config_last_reload_success 0.0" in scrape
        log = (workdir / "daemon.log").read_text()
        assert "monitor.bogus_key: unknown key" in log

        proc.send_signal(signal.SIGTERM)
        systemd.wait_for("STOPPING=1")
        assert proc.wait(30) == 0
    assert not (workdir / "ctl.sock").exists()


def test_sigterm_aborts_a_running_backup_cleanly(pg18: PgServer, workdir: Path) -> None:
    make_sample_db(pg18, "abort", rows=20, vectors=False)
    port = free_port()
    text = daemon_config_text(workdir, pg18, "abort", port, shutdown_timeout=1)
    locker = psycopg.connect(pg18.dsn("abort"))
    locker.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")  # pg_dump will wait on it
    try:
        with running_daemon(workdir, text) as (proc, systemd, _config):
            systemd.wait_for("READY=1")
            job = ControlClient(workdir / "ctl.sock").call("backup", {"target": "abort"})
            assert job["job"]["state"] in ("queued", "running")
            deadline = time.monotonic() + 30
            while not list((workdir / "backups").rglob("*.partial")):
                assert time.monotonic() < deadline, "the backup never started writing"
                time.sleep(0.1)
            proc.send_signal(signal.SIGTERM)
            systemd.wait_for("STOPPING=1")
            assert proc.wait(60) == 0
    finally:
        locker.rollback()
        locker.close()
    assert not list((workdir / "backups").rglob("*.partial"))
    assert not [p for p in (workdir / "backups").rglob("*") if p.is_file()]
    # no pg_dump survives the daemon
    out = subprocess.run(["pgrep", "-f", "pg_dump.*abort"], capture_output=True, check=False)
    assert out.stdout.strip() == b""


def test_dead_infrastructure_thread_is_fatal(pg18: PgServer, workdir: Path) -> None:
    make_sample_db(pg18, "fatal", rows=5, vectors=False)
    port = free_port()
    config = workdir / "pgwarden.toml"
    config.write_text(daemon_config_text(workdir, pg18, "fatal", port))
    daemon = Daemon(config, install_signals=False)
    box: dict[str, int] = {}
    thread = threading.Thread(target=lambda: box.update(code=daemon.run()))
    thread.start()
    try:
        assert daemon.started.wait(60)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            assert response.status == 200
        assert daemon._metrics_server is not None
        daemon._metrics_server.stop()  # the metrics thread ends: the daemon must give up
        thread.join(30)
    finally:
        if thread.is_alive():
            daemon.request_stop()
            thread.join(30)
    assert box["code"] == 1
    assert daemon.fatal is not None
    assert "metrics-http" in daemon.fatal


def test_bad_config_exits_2_before_starting(workdir: Path) -> None:
    config = workdir / "pgwarden.toml"
    config.write_text("[daemon]\nmax_parallel_jobs = 0\n")
    result = subprocess.run(
        [sys.executable, "-m", "pgwarden.cli", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "daemon.max_parallel_jobs: must be >= 1 (got 0)" in result.stdout + result.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT])
def test_sigint_stops_like_sigterm(pg18: PgServer, workdir: Path, sig: signal.Signals) -> None:
    make_sample_db(pg18, "intr", rows=5, vectors=False)
    with running_daemon(workdir, daemon_config_text(workdir, pg18, "intr", free_port())) as (
        proc,
        systemd,
        _config,
    ):
        systemd.wait_for("READY=1")
        proc.send_signal(sig)
        systemd.wait_for("STOPPING=1")
        assert proc.wait(30) == 0
