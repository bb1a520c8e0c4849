"""systemd's notify protocol, spoken over ``$NOTIFY_SOCKET`` directly.

``READY=1`` once every thread runs, ``STATUS=...`` as things change, ``RELOADING=1`` with
``MONOTONIC_USEC`` before a reload, ``STOPPING=1`` on shutdown, ``WATCHDOG=1`` pings from the
main loop.  Without ``$NOTIFY_SOCKET`` every call is a no-op, so the daemon runs the same in a
terminal.  ``@name`` addresses the abstract namespace.

The socket is non-blocking: a listener that stops reading (its queue holds about ten
datagrams) must never hold the daemon's main loop, so ``STATUS=`` and watchdog messages that
do not fit are dropped, and ``READY=1`` and ``STOPPING=1`` -- the two systemd acts on -- are
retried for up to :data:`STATE_RETRY_S`.
"""

from __future__ import annotations

import os
import socket
import time

#: how long READY=1 and STOPPING=1 are retried while the listener's queue is full
STATE_RETRY_S = 5.0


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = environ if environ is not None else dict(os.environ)
        self._address: str | bytes | None = None
        path = env.get("NOTIFY_SOCKET")
        if path:
            self._address = b"\0" + path[1:].encode() if path.startswith("@") else path
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        self.watchdog_usec: int | None = None
        if usec and usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_usec = int(usec)
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self._address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between pings: half of ``WATCHDOG_USEC`` as systemd recommends."""
        return self.watchdog_usec / 2_000_000 if self.watchdog_usec else None

    def send(self, *fields: str, retry_s: float = 0.0) -> bool:
        """Send one message; ``False`` when it could not be delivered (within ``retry_s``
        while the listener's queue is full)."""
        if self._address is None:
            return False
        if self._sock is None:
            self._sock = socket.socket(
                socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
            )
        message = "\n".join(fields).encode()
        deadline = time.monotonic() + retry_s
        while True:
            try:
                self._sock.sendto(message, self._address)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.05)
            except OSError:
                # systemd gone or socket unreachable: the daemon keeps working without it
                return False
            else:
                return True

    def ready(self, status: str = "") -> None:
        self.send("READY=1", *([f"STATUS={status}"] if status else []), retry_s=STATE_RETRY_S)

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> None:
        self.send("STOPPING=1", retry_s=STATE_RETRY_S)

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
