"""The metrics listener answers a scraper's request in its listening thread when it can
(:mod:`pgwarden.metrics.connections`), and hands a connection to a thread when it must.

The listener is driven one connection at a time (``handle_request``) after the client has
connected and written, so whether the head had arrived is not left to timing.
"""

from __future__ import annotations

import gzip
import socket
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from prometheus_client import generate_latest

from pgwarden.metrics import Metrics
from pgwarden.metrics.auth import BasicAuth
from pgwarden.metrics.connections import ListeningServer
from pgwarden.metrics.http import MetricsServer
from tests.test_metrics import basic, bcrypt_hash, serving

GET = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"


@contextmanager
def listener(metrics: Metrics, **kwargs: Any) -> Iterator[tuple[MetricsServer, list[str]]]:
    """A listener not serving on its own, and the names of the request threads it starts."""
    server = MetricsServer(metrics, "127.0.0.1", 0, lambda: True, **kwargs)
    threads: list[str] = []
    original = ListeningServer.process_request_thread

    def counted(self: ListeningServer, request: Any, address: Any) -> None:
        threads.append(threading.current_thread().name)
        original(self, request, address)

    ListeningServer.process_request_thread = counted  # type: ignore[method-assign]
    try:
        yield server, threads
    finally:
        ListeningServer.process_request_thread = original  # type: ignore[method-assign]
        server._server.server_close()  # never served on its own: nothing to shut down


def serve_one(server: MetricsServer) -> None:
    server._server.handle_request()


def read_all(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return answer


def body(answer: bytes) -> bytes:
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 OK"), head
    return rest


def test_a_request_already_arrived_is_answered_in_the_listening_thread() -> None:
    metrics = Metrics()
    metrics.init_target("shop")
    with listener(metrics) as (server, threads):
        with socket.create_connection(("127.0.0.1", server.port)) as client:
            client.sendall(GET)
            serve_one(server)  # the whole answer is sent before handle_request returns
            answer = read_all(client)
        assert body(answer) == generate_latest(metrics.registry)
        assert threads == []
        assert server._server.slots.acquire(blocking=False)  # the slot came back


def test_what_the_socket_cannot_take_is_sent_by_a_thread_while_others_are_served() -> None:
    metrics = Metrics()
    for i in range(400):  # an exposition of 0.5 MB: more than a Unix socket's buffer takes
        metrics.init_target(f"db{i:04d}_{'x' * 40}")
    expected = generate_latest(metrics.registry)
    assert len(expected) > 500_000
    with listener(metrics) as (server, threads):
        ours, slow = socket.socketpair()  # a connection as accepted, its client not reading
        with slow:
            slow.sendall(GET)
            server._server.process_request(ours, ("127.0.0.1", 0))
            assert "metrics-send" in [t.name for t in threading.enumerate()]
            with socket.create_connection(("127.0.0.1", server.port)) as other:
                other.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
                serve_one(server)
                assert read_all(other).endswith(b"\r\n\r\nok\n")
            assert body(read_all(slow)) == expected
        assert threads == []


def test_a_head_still_arriving_goes_to_a_thread_of_its_own() -> None:
    with listener(Metrics()) as (server, threads):
        with socket.create_connection(("127.0.0.1", server.port)) as client:
            client.sendall(b"GET /healthz HTTP/1.0\r\n")  # no blank line yet
            serve_one(server)
            client.sendall(b"\r\n")
            assert read_all(client).endswith(b"\r\n\r\nok\n")
        assert len(threads) == 1


@pytest.mark.parametrize("password", ["right", "wrong"])
def test_basic_auth_is_checked_in_a_thread_never_in_the_listening_one(password: str) -> None:
    auth = BasicAuth({"prom": bcrypt_hash("right")})
    with listener(Metrics(), auth=auth) as (server, threads):
        with socket.create_connection(("127.0.0.1", server.port)) as client:
            header = basic("prom", password)["Authorization"].encode()
            client.sendall(b"GET /healthz HTTP/1.0\r\nAuthorization: " + header + b"\r\n\r\n")
            serve_one(server)
            answer = read_all(client)
        assert answer.startswith(b"HTTP/1.0 200" if password == "right" else b"HTTP/1.0 401")
        assert len(threads) == 1


def test_an_answer_never_read_is_dropped_at_the_deadline_and_its_slot_comes_back() -> None:
    metrics = Metrics()
    for i in range(400):
        metrics.init_target(f"db{i:04d}_{'x' * 40}")
    with listener(metrics, deadline_s=0.5, max_connections=1) as (server, _threads):
        ours, slow = socket.socketpair()
        with slow:
            slow.sendall(GET)
            server._server.process_request(ours, ("127.0.0.1", 0))
            senders = [t for t in threading.enumerate() if t.name == "metrics-send"]
            assert senders
            for sender in senders:
                sender.join(timeout=10)
            assert not any(sender.is_alive() for sender in senders)
            assert server._server.slots.acquire(blocking=False)
            answer = read_all(slow)  # what was sent before the deadline, then the close
            assert 0 < len(answer) < 500_000


def test_a_gzip_answer_is_the_library_text_and_follows_its_changes() -> None:
    metrics = Metrics()
    metrics.init_target("shop")
    with serving(metrics) as server:
        url = f"http://127.0.0.1:{server.port}/metrics"

        def scrape() -> tuple[bytes, str]:
            request = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.read(), response.headers["Content-Encoding"]

        first, encoding = scrape()
        assert encoding == "gzip"
        assert gzip.decompress(first) == generate_latest(metrics.registry)
        assert scrape()[0] == first  # the same text: the same bytes (no timestamp inside)
        metrics.backup_last_size.labels("shop").set(7)
        changed, _ = scrape()
        assert gzip.decompress(changed) == generate_latest(metrics.registry)
        assert changed != first
