"""The metrics HTTP listener: ``/metrics`` and ``/healthz`` on the configured address only.

:class:`MetricsServer` serves the registry of a :class:`~pgwarden.metrics.registry.Metrics`
and ``/healthz`` (200 while the daemon's threads are alive, 503 otherwise), optionally over TLS
and behind HTTP basic auth.  The password is configured as a SHA-crypt hash (``$5$``/``$6$``,
as made by ``openssl passwd -5``), verified with the standard library only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

from pgwarden import logsetup
from pgwarden.config import Config
from pgwarden.errors import ConfigError
from pgwarden.metrics.registry import Metrics

log = logsetup.get_logger("pgwarden.metrics")

REQUEST_TIMEOUT_S = 30.0  # a client that stalls (TLS handshake, request) is dropped after this
WsgiStart = Callable[[str, list[tuple[str, str]]], Any]


# -- basic auth with a SHA-crypt password hash -----------------------------------------------

_B64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ROUNDS_DEFAULT, _ROUNDS_MIN, _ROUNDS_MAX = 5000, 1000, 999_999_999


def _sha_crypt_order(variant: str) -> list[tuple[int, int, int]]:
    """The byte triples of the final encoding (Drepper's SHA-crypt specification)."""
    n, rotations = (10, (0, 2, 1)) if variant == "5" else (21, (0, 1, 2))
    out = []
    for i in range(n):
        triple = (i, i + n, i + 2 * n)
        first = rotations[i % 3]
        out.append((triple[first], triple[(first + 1) % 3], triple[(first + 2) % 3]))
    return out


def sha_crypt(password: str, setting: str) -> str:
    """crypt(3) with a ``$5$`` (SHA-256) or ``$6$`` (SHA-512) setting: the full hash string.

    ``setting`` is ``$5$[rounds=N$]salt[$...]``; anything after the salt is ignored, so a
    stored hash can be passed to recompute itself.
    """
    parts = setting.split("$")
    if len(parts) < 3 or parts[0] != "" or parts[1] not in ("5", "6"):
        raise ValueError("not a SHA-crypt hash: expected $5$ or $6$ (openssl passwd -5)")
    variant, rest = parts[1], parts[2:]
    rounds, custom = _ROUNDS_DEFAULT, False
    if rest[0].startswith("rounds="):
        try:
            rounds = min(max(int(rest[0][7:]), _ROUNDS_MIN), _ROUNDS_MAX)
        except ValueError as exc:
            raise ValueError("SHA-crypt hash with an invalid rounds= field") from exc
        custom, rest = True, rest[1:]
    if not rest:
        raise ValueError("SHA-crypt hash without a salt")
    salt = rest[0][:16].encode()
    digest = hashlib.sha256 if variant == "5" else hashlib.sha512
    size = digest().digest_size
    key = password.encode()
    b = digest(key + salt + key).digest()
    a = digest(key + salt)
    a.update(b * (len(key) // size) + b[: len(key) % size])
    n = len(key)
    while n:
        a.update(b if n & 1 else key)
        n >>= 1
    c = a.digest()
    dp = digest(key * len(key)).digest()
    p = (dp * (len(key) // size + 1))[: len(key)]
    ds = digest(salt * (16 + c[0])).digest()
    s = (ds * (len(salt) // size + 1))[: len(salt)]
    for i in range(rounds):
        h = digest(p if i & 1 else c)
        if i % 3:
            h.update(s)
        if i % 7:
            h.update(p)
        h.update(c if i & 1 else p)
        c = h.digest()
    out = []
    for x, y, z in _sha_crypt_order(variant):
        out.append(_b64_24(c[x], c[y], c[z], 4))
    out.append(_b64_24(0, c[31], c[30], 3) if variant == "5" else _b64_24(0, 0, c[63], 2))
    prefix = f"${variant}$" + (f"rounds={rounds}$" if custom else "")
    return f"{prefix}{salt.decode()}${''.join(out)}"


def _b64_24(b2: int, b1: int, b0: int, n: int) -> str:
    w = (b2 << 16) | (b1 << 8) | b0
    chars = []
    for _ in range(n):
        chars.append(_B64[w & 0x3F])
        w >>= 6
    return "".join(chars)


class BasicAuth:
    """HTTP basic auth against one user and a SHA-crypt hash; the last accepted header is
    remembered so that Prometheus's scrapes do not pay the hash each time."""

    def __init__(self, user: str, password_hash: str) -> None:
        if not password_hash.startswith(("$5$", "$6$")) or password_hash.count("$") < 3:
            raise ValueError(
                "basic_auth_password_hash must be a SHA-crypt hash ($5$ or $6$), "
                "made with: openssl passwd -5"
            )
        sha_crypt("", password_hash)  # a malformed hash fails now, not at the first scrape
        self.user = user
        self._hash = password_hash
        self._accepted: bytes | None = None

    def check(self, header: str | None) -> bool:
        """True if an ``Authorization`` header carries the right user and password."""
        if not header or not header.startswith("Basic "):
            return False
        raw = header.encode("latin-1", "replace")
        accepted = self._accepted
        if accepted is not None and hmac.compare_digest(raw, accepted):
            return True
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, sep, password = decoded.partition(":")
        user_ok = hmac.compare_digest(user.encode(), self.user.encode())
        password_ok = hmac.compare_digest(sha_crypt(password, self._hash), self._hash)
        if user_ok and password_ok and sep:
            self._accepted = raw
            return True
        return False


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


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    ssl_context: ssl.SSLContext | None = None

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = self.socket.accept()
        sock.settimeout(REQUEST_TIMEOUT_S)
        if self.ssl_context is not None:  # the handshake runs in the request's own thread
            sock = self.ssl_context.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False
            )
        return sock, address

    def finish_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            try:
                request.do_handshake()
            except (ssl.SSLError, OSError) as exc:
                log.debug(
                    "metrics TLS handshake failed", client=str(client_address[0]), error=str(exc)
                )
                return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("metrics request failed", client=str(client_address[0]), exc_info=True)


class _ThreadingWSGIServer6(_ThreadingWSGIServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


class MetricsServer:
    """``/metrics`` and ``/healthz`` on one address, in a named thread.

    ``tls`` is a context from :func:`tls_context`; ``auth`` protects every path when given.
    Listening beyond loopback without auth (or with auth but without TLS) logs a warning.
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
    ) -> None:
        self._metrics_app = make_wsgi_app(metrics.registry)
        self._healthy = healthy
        self._auth = auth
        self.tls = tls is not None
        server_class = _ThreadingWSGIServer6 if ":" in host else _ThreadingWSGIServer
        self._server = make_server(
            host, port, self._app, server_class=server_class, handler_class=_QuietHandler
        )
        self._server.ssl_context = tls
        self.host = host
        self.thread = threading.Thread(
            target=self._server.serve_forever, name="metrics-http", daemon=True
        )
        self._warn_exposure()

    @classmethod
    def from_config(
        cls, metrics: Metrics, config: Config, healthy: Callable[[], bool]
    ) -> MetricsServer:
        """The server ``[metrics]`` describes; a bad hash or certificate is a ConfigError."""
        m = config.metrics
        tls = None
        auth = None
        try:
            if m.basic_auth_user is not None and m.basic_auth_password_hash is not None:
                auth = BasicAuth(m.basic_auth_user, m.basic_auth_password_hash.reveal())
        except ValueError as exc:
            raise ConfigError(config.source, [f"metrics.basic_auth_password_hash: {exc}"]) from exc
        if m.tls_cert_file is not None and m.tls_key_file is not None:
            try:
                tls = tls_context(m.tls_cert_file, m.tls_key_file)
            except (ssl.SSLError, OSError) as exc:
                problem = f"cannot load {m.tls_cert_file} and {m.tls_key_file}: {exc}"
                raise ConfigError(config.source, [f"metrics.tls_cert_file: {problem}"]) from exc
        return cls(metrics, m.host, m.port, healthy, tls=tls, auth=auth)

    def _warn_exposure(self) -> None:
        if is_loopback(self.host):
            return
        listen = f"{self.host or '*'}:{self.port}"
        if self._auth is None:
            log.warning(
                "metrics listen beyond loopback without basic auth: anyone who can reach the "
                "address can read them (set basic_auth_user and basic_auth_password_hash)",
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
        if self._auth is not None and not self._auth.check(environ.get("HTTP_AUTHORIZATION")):
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
