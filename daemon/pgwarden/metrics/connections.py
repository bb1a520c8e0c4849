"""One connection of the metrics listener: its slot, its deadline, its request head, its answer.

:class:`ListenerSettings` (TLS and basic auth) is one reference the server reads per
connection, so a reload swaps it in place.  Unauthenticated clients are bounded: at most
``max_connections`` connections are served at once (the others get a 503 or are closed), and
each connection has one overall deadline for its TLS handshake, request head (capped at
:data:`MAX_HEAD_BYTES`) and answer.

A plain-HTTP request without basic auth whose whole head has arrived when its connection is
accepted -- nearly always a scraper's on the same host; across a network the request usually
comes a little after the accept -- is answered in the listening thread, and only what
the socket does not take at once is left to a thread (:meth:`ListeningServer.answer_inline`):
each thread started is a wait for the GIL behind the backups' threads (``/metrics`` during
backups: ``benchmarks/scale.py metrics``).  Anything else (TLS, a bcrypt check, a head still
arriving) is served in a thread of its own, under the deadline.
"""

from __future__ import annotations

import contextlib
import io
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from pgwarden import logsetup
from pgwarden.config import Config
from pgwarden.errors import ConfigError
from pgwarden.metrics.auth import BasicAuth

log = logsetup.get_logger("pgwarden.metrics")

REQUEST_DEADLINE_S = 10.0  # handshake + request head + answer, per connection
MAX_CONNECTIONS = 16  # served at once; more get a 503 (plain HTTP) or are closed (TLS)
MAX_HEAD_BYTES = 16 * 1024  # request line and headers; beyond: 431
_BUSY = b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 5\r\nConnection: close\r\n\r\nbusy\n"
_TOO_LARGE = (
    b"HTTP/1.0 431 Request Header Fields Too Large\r\nContent-Length: 16\r\n"
    b"Connection: close\r\n\r\nhead too large.\n"
)


def _head_end(head: bytes | bytearray, start: int = 0) -> int:
    """Where the request head's blank line starts in ``head`` (searched from ``start``), or -1
    while it has not arrived."""
    end = head.find(b"\n\r\n", start)
    return end if end >= 0 else head.find(b"\n\n", start)


def tls_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A TLS 1.2+ server context with the certificate chain and its key."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert_file), str(key_file))
    return context


@dataclass(frozen=True)
class ListenerSettings:
    """What a reload may change on a running listener: its TLS context and its basic auth."""

    tls: ssl.SSLContext | None = None
    auth: BasicAuth | None = None

    @classmethod
    def from_config(cls, config: Config) -> ListenerSettings:
        """The settings ``[metrics]`` describes; a bad hash or certificate is a ConfigError."""
        m = config.metrics
        tls = None
        auth = None
        users = m.auth_users()
        try:
            if users:
                auth = BasicAuth({user: h.reveal() for user, h in users.items()})
        except ValueError as exc:
            raise ConfigError(config.source, [f"metrics.basic_auth_users: {exc}"]) from exc
        if m.tls_cert_file is not None and m.tls_key_file is not None:
            try:
                tls = tls_context(m.tls_cert_file, m.tls_key_file)
            except (ssl.SSLError, OSError) as exc:
                problem = f"cannot load {m.tls_cert_file} and {m.tls_key_file}: {exc}"
                raise ConfigError(config.source, [f"metrics.tls_cert_file: {problem}"]) from exc
        return cls(tls, auth)


class ListeningServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    settings = ListenerSettings()
    deadline_s = REQUEST_DEADLINE_S
    slots = threading.BoundedSemaphore(MAX_CONNECTIONS)  # replaced per server

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = self.socket.accept()
        tls = self.settings.tls
        if tls is not None:  # the handshake runs in the request's own thread
            sock.settimeout(self.deadline_s)
            sock = tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        # a plain socket is left blocking until answer_inline has peeked: a recv on a socket
        # with a timeout polls first, MSG_DONTWAIT or not
        return sock, address

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            log.debug("metrics connection refused: too many", client=str(client_address[0]))
            if not isinstance(request, ssl.SSLSocket):
                try:
                    request.setblocking(False)
                    request.send(_BUSY)
                except OSError:
                    pass
            self.shutdown_request(request)
            return
        if self.answer_inline(request, client_address):
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def answer_inline(self, request: Any, client_address: Any) -> bool:
        """Answer here a plain-HTTP request without auth whose head has arrived whole (see the
        module docstring); False, having read nothing, when it must go to a thread."""
        if isinstance(request, ssl.SSLSocket):
            return False
        head = b""
        if self.settings.auth is None:  # bcrypt never runs in the listening thread
            with contextlib.suppress(OSError):  # nothing yet, or a reset: the thread finds out
                head = request.recv(MAX_HEAD_BYTES + 1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        if _head_end(head) < 0:
            with contextlib.suppress(OSError):
                request.settimeout(self.deadline_s)
            return False
        rest = b""
        try:
            handler = _InlineHandler(request, client_address, self)
            rest = handler.unsent
        except Exception:  # noqa: BLE001 - as a request thread would: logged, connection closed
            self.handle_error(request, client_address)
        if rest:
            sender = threading.Thread(
                target=self._send_rest,
                args=(request, rest, handler.remaining),
                name="metrics-send",
                daemon=True,
            )
            try:
                sender.start()
            except RuntimeError as exc:  # no thread to be had: the answer is cut short
                log.debug("metrics answer cut short", error=str(exc))
            else:
                return True
        self.shutdown_request(request)
        self.slots.release()
        return True

    def _send_rest(
        self, request: socket.socket, rest: bytes, remaining: Callable[[], float]
    ) -> None:
        """What an inline answer's socket did not take at once, sent within what ``remaining``
        says is left of the connection's deadline."""
        try:
            request.settimeout(remaining())
            request.sendall(rest)
        except OSError as exc:
            log.debug("metrics client dropped", error=str(exc))
        finally:
            self.shutdown_request(request)
            self.slots.release()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("metrics request failed", client=str(client_address[0]), exc_info=True)


class ListeningServer6(ListeningServer):
    address_family = socket.AF_INET6


class _DeadlineWriter(io.BufferedIOBase):
    """The answer's writes, gathered and sent at each flush (wsgiref flushes after the body,
    the handler's finish once more) in the time left of the connection's deadline.

    wsgiref writes the status line, ``Date``, ``Server``, the headers and the body separately:
    one send instead of five, and no small segments for Nagle's algorithm to hold back.  (The
    p99 of ``/metrics`` during backups did not move with it: ``benchmarks/scale.py metrics``.)
    """

    def __init__(
        self, sock: socket.socket, remaining: Callable[[], float], *, inline: bool = False
    ) -> None:
        self._sock = sock
        self._remaining = remaining
        self._pending: list[bytes] = []
        self._inline = inline
        self.unsent = b""  # inline: what the socket did not take at once

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._pending.append(bytes(data))
        return len(self._pending[-1])

    def flush(self) -> None:
        if self._pending:
            answer = b"".join(self._pending)
            self._pending.clear()
            if not self._inline:
                self._sock.settimeout(self._remaining())
                self._sock.sendall(answer)
                return
            sent = 0
            if not self.unsent:  # never past bytes still waiting
                with contextlib.suppress(BlockingIOError):
                    sent = self._sock.send(answer, socket.MSG_DONTWAIT)
            self.unsent += answer[sent:]


class Handler(WSGIRequestHandler):
    """One request per connection, under one deadline from accept to the answer's last byte."""

    server: ListeningServer
    inline = False
    # a request line without a (valid) version is answered as HTTP/1.0: with a status line,
    # never a bare HTTP/0.9 body (an error included)
    default_request_version = "HTTP/1.0"

    def setup(self) -> None:
        self.deadline = time.monotonic() + self.server.deadline_s
        if isinstance(self.request, ssl.SSLSocket):
            # CPython bounds the whole handshake by the timeout, not each read
            self.request.settimeout(self.remaining())
            self.request.do_handshake()
        super().setup()

    def remaining(self) -> float:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("metrics request deadline passed")
        return remaining

    def _read_head(self) -> bytes | None:
        """The request line and headers, or None when they exceed :data:`MAX_HEAD_BYTES`."""
        head = bytearray()
        while True:
            if self.inline:  # peeked whole: never waits (and no timeout to set, a syscall)
                chunk = self.connection.recv(4096, socket.MSG_DONTWAIT)
            else:
                self.connection.settimeout(self.remaining())
                chunk = self.connection.recv(4096)
            if not chunk:
                raise ConnectionError("closed before the end of the request head")
            start = max(0, len(head) - 3)
            head += chunk
            if _head_end(head, start) >= 0:
                return bytes(head)
            if len(head) > MAX_HEAD_BYTES:
                return None

    def handle(self) -> None:
        try:
            head = self._read_head()
            if head is None:
                self.connection.sendall(_TOO_LARGE)
                return
            self.rfile = io.BytesIO(head)
            self.wfile = _DeadlineWriter(self.connection, self.remaining, inline=self.inline)
        except (OSError, ssl.SSLError) as exc:  # TimeoutError and ConnectionError are OSErrors
            log.debug("metrics client dropped", client=self.client_address[0], error=str(exc))
            return
        super().handle()

    def log_message(self, format: str, *args: Any) -> None:
        return


class _InlineHandler(Handler):
    """A request answered in the listening thread: the answer is sent without waiting, and
    what the socket did not take is left in :attr:`unsent` (the server's to send)."""

    inline = True

    @property
    def unsent(self) -> bytes:
        writer = self.wfile
        return writer.unsent if isinstance(writer, _DeadlineWriter) else b""
