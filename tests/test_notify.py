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


def test_a_listener_that_stops_reading_never_blocks_the_daemon(tmp_path: Path) -> None:
    """An unread notify socket fills after a few datagrams: further STATUS= and watchdog
    messages are dropped at once (the main loop must not hang in a send), READY=1 is retried
    for a bounded time and delivered once the listener reads again."""
    import threading

    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        notifier = Notifier({"NOTIFY_SOCKET": str(path)})
        sent = []
        while len(sent) < 100_000 and (not sent or sent[-1]):  # net.unix.max_dgram_qlen
            sent.append(notifier.send(f"STATUS=message {len(sent)}"))
        assert sent[0] and not sent[-1]  # the queue filled, and the send returned at once
        reader = threading.Timer(0.3, lambda: [listener.recv(4096) for _ in range(5)])
        reader.start()
        assert notifier.send("READY=1", retry_s=30.0)  # delivered once the reader drains some
        reader.join()
        notifier.close()
