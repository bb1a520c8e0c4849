"""The metrics HTTP listener: ``/metrics`` and ``/healthz`` on the configured address only.

:class:`MetricsServer` serves the registry of a :class:`~pgwarden.metrics.registry.Metrics`
and ``/healthz`` (200 while the daemon's threads are alive, 503 otherwise), optionally over TLS
and behind HTTP basic auth with bcrypt hashes (:mod:`.auth`).  How each connection is served
-- TLS and auth swapped in place by a reload, the connection cap, the deadline, answers given
in the listening thread -- is :mod:`.connections`.
"""

from __future__ import annotations

import ipaddress
import ssl
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import make_server

from pgwarden import logsetup
from pgwarden.config import Config
from pgwarden.metrics.auth import BasicAuth
from pgwarden.metrics.connections import (
    MAX_CONNECTIONS,
    REQUEST_DEADLINE_S,
    Handler,
    ListenerSettings,
    ListeningServer,
    ListeningServer6,
    tls_context,
)
from pgwarden.metrics.exposition import FastExposition
from pgwarden.metrics.registry import Metrics

__all__ = ["ListenerSettings", "MetricsServer", "is_loopback", "tls_context"]

log = logsetup.get_logger("pgwarden.metrics")
WsgiStart = Callable[[str, list[tuple[str, str]]], Any]


def is_loopback(host: str) -> bool:
    """True if ``host`` is a loopback address (or ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
        server_class = ListeningServer6 if ":" in host else ListeningServer
        self._server = make_server(
            host, port, self._app, server_class=server_class, handler_class=Handler
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
