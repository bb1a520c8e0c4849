"""A real HTTP receiver on loopback for notification tests: a ``ThreadingHTTPServer`` in a
thread that records every request (healthchecks pings, webhooks, apprise ``json://``).

``status`` is the answer's code (a list is consumed one per request, then the last repeats);
``hold`` makes every handler wait (up to 30 s) until :meth:`Receiver.release`: a receiver that
does not answer.  Nothing is timed: tests wait for requests with :meth:`Receiver.wait_for`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

HOLD_SECONDS = 30.0


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    received_at: float  # time.monotonic() when it arrived (ordering only)


@dataclass
class Receiver:
    port: int = 0
    status: list[int] = field(default_factory=lambda: [200])
    requests: list[Request] = field(default_factory=list)
    answered: list[float] = field(default_factory=list)
    hold: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    changed: threading.Condition = field(default_factory=threading.Condition)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def next_status(self) -> int:
        with self.changed:
            return self.status.pop(0) if len(self.status) > 1 else self.status[0]

    def record(self, request: Request) -> None:
        with self.changed:
            self.requests.append(request)
            self.changed.notify_all()

    def wait_for(self, count: int, timeout: float = 60.0) -> list[Request]:
        deadline = time.monotonic() + timeout
        with self.changed:
            while len(self.requests) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"expected {count} requests, got {len(self.requests)}"
                self.changed.wait(left)
            return list(self.requests)

    def release(self) -> None:
        self.released.set()


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            parts = urlsplit(self.path)
            receiver.record(
                Request(
                    self.command,
                    parts.path,
                    parse_qs(parts.query),
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                    time.monotonic(),
                )
            )
            if receiver.hold.is_set():
                receiver.released.wait(HOLD_SECONDS)
            code = receiver.next_status()
            try:
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")
            except OSError:
                pass  # the client gave up (its timeout): nothing to answer
            receiver.answered.append(time.monotonic())

        def do_GET(self) -> None:
            self.do_POST()

        def log_message(self, format: str, *args: object) -> None:
            return

    return Handler


@contextmanager
def running_receiver(**kwargs: object) -> Iterator[Receiver]:
    receiver = Receiver(**kwargs)  # type: ignore[arg-type]
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    server.daemon_threads = True
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name="receiver", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.release()
        server.shutdown()
        server.server_close()
        thread.join(10)
