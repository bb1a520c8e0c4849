"""The metrics HTTP listener: ``/metrics`` and ``/healthz`` on the configured address only.

:class:`MetricsServer` serves the registry of a :class:`~pgwarden.metrics.registry.Metrics`
and ``/healthz`` (200 while the daemon's threads are alive, 503 otherwise), optionally over TLS
and behind HTTP basic auth with bcrypt hashes (:mod:`.auth`).  TLS and auth are one
:class:`ListenerSettings` reference read per connection, so a reload swaps them in place.

Unauthenticated clients are bounded: at most ``max_connections`` connections are served at
once (the others get a 503 or are closed), and each connection has one overall deadline for
its TLS handshake, request head (capped at :data:`MAX_HEAD_BYTES`) and answer.
"""

from __future__ import annotations

import io
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from pgwarden import logsetup
from pgwarden.config import Config
from pgwarden.errors import ConfigError
from pgwarden.metrics.auth import BasicAuth
from pgwarden.metrics.exposition import FastExposition
from pgwarden.metrics.registry import Metrics

log = logsetup.get_logger("pgwarden.metrics")

REQUEST_DEADLINE_S = 10.0  # handshake + request head + answer, per connection
MAX_CONNECTIONS = 16  # served at once; more get a 503 (plain HTTP) or are closed (TLS)
MAX_HEAD_BYTES = 16 * 1024  # request line and headers; beyond: 431
WsgiStart = Callable[[str, list[tuple[str, str]]], Any]
_BUSY = b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 5\r\nConnection: close\r\n\r\nbusy\n"
_TOO_LARGE = (
    b"HTTP/1.0 431 Request Header Fields Too Large\r\nContent-Length: 16\r\n"
    b"Connection: close\r\n\r\nhead too large.\n"
)


# -- the HTTP server ------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    """True if ``host`` is a loopback address (or ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    settings = ListenerSettings()
    deadline_s = REQUEST_DEADLINE_S
    slots = threading.BoundedSemaphore(MAX_CONNECTIONS)  # replaced per server

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = self.socket.accept()
        sock.settimeout(self.deadline_s)
        tls = self.settings.tls
        if tls is not None:  # the handshake runs in the request's own thread
            sock = tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
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
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("metrics request failed", client=str(client_address[0]), exc_info=True)


class _ThreadingWSGIServer6(_ThreadingWSGIServer):
    address_family = socket.AF_INET6


class _DeadlineWriter(io.BufferedIOBase):
    """The answer's writes, gathered and sent at each flush (wsgiref flushes after the body,
    the handler's finish once more) in the time left of the connection's deadline.

    wsgiref writes the status line, ``Date``, ``Server``, the headers and the body separately:
    one send instead of five, and no small segments for Nagle's algorithm to hold back.  (The
    p99 of ``/metrics`` during backups did not move with it: ``benchmarks/scale.py metrics``.)
    """

    def __init__(self, sock: socket.socket, remaining: Callable[[], float]) -> None:
        self._sock = sock
        self._remaining = remaining
        self._pending: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._pending.append(bytes(data))
        return len(self._pending[-1])

    def flush(self) -> None:
        if self._pending:
            answer = b"".join(self._pending)
            self._pending.clear()
            self._sock.settimeout(self._remaining())
            self._sock.sendall(answer)


class _Handler(WSGIRequestHandler):
    """One request per connection, under one deadline from accept to the answer's last byte."""

    server: _ThreadingWSGIServer
    # a request line without a (valid) version is answered as HTTP/1.0: with a status line,
    # never a bare HTTP/0.9 body (an error included)
    default_request_version = "HTTP/1.0"

    def setup(self) -> None:
        self.deadline = time.monotonic() + self.server.deadline_s
        if isinstance(self.request, ssl.SSLSocket):
            # CPython bounds the whole handshake by the timeout, not each read
            self.request.settimeout(self._remaining())
            self.request.do_handshake()
        super().setup()

    def _remaining(self) -> float:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("metrics request deadline passed")
        return remaining

    def _read_head(self) -> bytes | None:
        """The request line and headers, or None when they exceed :data:`MAX_HEAD_BYTES`."""
        head = bytearray()
        while True:
            self.connection.settimeout(self._remaining())
            chunk = self.connection.recv(4096)
            if not chunk:
                raise ConnectionError("closed before the end of the request head")
            start = max(0, len(head) - 3)
            head += chunk
            end = head.find(b"\n\r\n", start)
            if end < 0:
                end = head.find(b"\n\n", start)
            if end >= 0:
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
            self.wfile = _DeadlineWriter(self.connection, self._remaining)
        except (OSError, ssl.SSLError) as exc:  # TimeoutError and ConnectionError are OSErrors
            log.debug("metrics client dropped", client=self.client_address[0], error=str(exc))
            return
        super().handle()

    def log_message(self, format: str, *args: Any) -> None:
        return


class MetricsServer:
    """``/metrics`` and ``/healthz`` on one address, in a named thread.

    ``tls`` is a context from :func:`tls_context`; ``auth`` protects every path when given;
    :meth:`apply` replaces both while serving.  Listening beyond loopback without auth (or with
    auth but without TLS) logs a warning.
    """

    def __init__(
        self,
        metrics: Metrics,
        host: str,
        port: int,
        healthy: Callable[[], bool],
        *,
        tls: ssl.SSLContext | None = None,
        auth: BasicAuth | None = None,
        max_connections: int = MAX_CONNECTIONS,
        deadline_s: float = REQUEST_DEADLINE_S,
    ) -> None:
        self._metrics_app = FastExposition(metrics.registry).wsgi
        self._healthy = healthy
        server_class = _ThreadingWSGIServer6 if ":" in host else _ThreadingWSGIServer
        self._server = make_server(
            host, port, self._app, server_class=server_class, handler_class=_Handler
        )
        self._server.slots = threading.BoundedSemaphore(max_connections)
        self._server.deadline_s = deadline_s
        self.host = host
        self.thread = threading.Thread(
            target=self._server.serve_forever, name="metrics-http", daemon=True
        )
        self.apply(ListenerSettings(tls, auth))

    @classmethod
    def from_config(
        cls, metrics: Metrics, config: Config, healthy: Callable[[], bool]
    ) -> MetricsServer:
        """The server ``[metrics]`` describes; a bad hash or certificate is a ConfigError."""
        settings = ListenerSettings.from_config(config)
        m = config.metrics
        return cls(metrics, m.host, m.port, healthy, tls=settings.tls, auth=settings.auth)

    @property
    def tls(self) -> bool:
        return self._server.settings.tls is not None

    def apply(self, settings: ListenerSettings) -> None:
        """Serve new connections with ``settings`` (TLS and auth); running ones finish as
        they began."""
        self._server.settings = settings
        self._warn_exposure()

    def _warn_exposure(self) -> None:
        if is_loopback(self.host):
            return
        listen = f"{self.host or '*'}:{self.port}"
        if self._server.settings.auth is None:
            log.warning(
                "metrics listen beyond loopback without basic auth: anyone who can reach the "
                "address can read them (set basic_auth_users)",
                listen=listen,
            )
        elif not self.tls:
            log.warning(
                "metrics basic auth without TLS sends the password in clear text", listen=listen
            )

    @property
    def port(self) -> int:
        """The bound port (the real one when the configured port was 0)."""
        return int(self._server.server_address[1])

    def _app(self, environ: dict[str, Any], start_response: WsgiStart) -> Iterable[bytes]:
        text = ("Content-Type", "text/plain; charset=utf-8")
        auth = self._server.settings.auth
        if auth is not None and not auth.check(environ.get("HTTP_AUTHORIZATION")):
            challenge = ("WWW-Authenticate", 'Basic realm="pgwarden", charset="UTF-8"')
            start_response("401 Unauthorized", [text, challenge])
            return [b"unauthorized\n"]
        path = environ.get("PATH_INFO", "/")
        if path == "/healthz":
            ok = self._healthy()
            start_response("200 OK" if ok else "503 Service Unavailable", [text])
            return [b"ok\n" if ok else b"unhealthy\n"]
        if path in ("/metrics", "/metrics/"):
            result: Iterable[bytes] = self._metrics_app(environ, start_response)
            return result
        start_response("404 Not Found", [text])
        return [b"pgwarden: see /metrics and /healthz\n"]

    def start(self) -> None:
        """Serve in the ``metrics-http`` thread."""
        self.thread.start()

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        self._server.shutdown()
        self._server.server_close()
