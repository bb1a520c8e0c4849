"""sd_notify messages reach a datagram socket, abstract or path."""

from __future__ import annotations

import socket
from pathlib import Path

from pgwarden.service.sdnotify import Notifier


def test_messages_reach_a_path_socket(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        notifier = Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "2000000"})
        assert notifier.watchdog_interval == 1.0
        notifier.ready("2 targets")
        notifier.reloading()
        notifier.watchdog()
        notifier.stopping()
        messages = [sock.recv(4096).decode() for _ in range(4)]
        notifier.close()
    assert messages[0] == "READY=1\nSTATUS=2 targets"
    assert messages[1].startswith("RELOADING=1\nMONOTONIC_USEC=")
    assert messages[2] == "WATCHDOG=1"
    assert messages[3] == "STOPPING=1"


def test_abstract_socket_and_no_socket() -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0pgwarden-test-notify")
        notifier = Notifier({"NOTIFY_SOCKET": "@pgwarden-test-notify"})
        notifier.ready()
        notifier.close()
        assert sock.recv(100) == b"READY=1"
    silent = Notifier({})
    assert not silent.enabled
    silent.ready()  # a no-op without systemd


def test_watchdog_for_another_pid_is_ignored() -> None:
    assert Notifier({"WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}).watchdog_interval is None
