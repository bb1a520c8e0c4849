"""Fuzzing the metrics HTTP listener (issue 16, the faults suite).

A real :class:`~pgwarden.metrics.http.MetricsServer` on loopback with bcrypt basic auth, a
short per-connection deadline.  Hypothesis builds raw requests: methods (real, invented,
bytes), paths (long, percent-encoded, non-ASCII, absolute URLs), versions (1.0, 1.1, 0.9,
2.0, garbage), header sets (random names and values, duplicates, a huge one, many), and
``Authorization`` headers (right, wrong, unknown user, bad base64, no colon, long passwords,
non-UTF-8, other schemes).  Every answer is a well-formed HTTP/1.x status line and head with a
known status (never a 500, 200 only with the right password) or a closed connection, within
the socket timeout; afterwards the listener still serves ``/metrics`` to the right user.

Derandomized (``derandomize=True``): the same examples on every run.
"""

from __future__ import annotations

import base64
import errno
import re
import socket
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgwarden.metrics import Metrics
from pgwarden.metrics.auth import BasicAuth
from pgwarden.metrics.http import MetricsServer
from tests.test_metrics import bcrypt_hash

EXAMPLES = 300
USER, PASSWORD = "prom", "scrape-c2-secret"
DEADLINE_S = 2.0  # the listener's per-connection deadline in this test
CLIENT_TIMEOUT_S = DEADLINE_S + 8  # no answer nor close by then: a hang, the test fails
ALLOWED = {200, 400, 401, 404, 405, 408, 411, 413, 414, 431, 501, 503, 505}
_CLOSED = {errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN}
_STATUS = re.compile(rb"^HTTP/1\.[01] (\d{3}) [^\r\n]*\r\n")

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def server() -> Iterator[MetricsServer]:
    auth = BasicAuth({USER: bcrypt_hash(PASSWORD), "other": bcrypt_hash("x")})
    listener = MetricsServer(Metrics(), "127.0.0.1", 0, lambda: True, auth=auth, deadline_s=2.0)
    listener.start()
    try:
        yield listener
    finally:
        listener.stop()


def _basic(user: bytes, password: bytes) -> bytes:
    return b"Basic " + base64.b64encode(user + b":" + password)


GOOD = _basic(USER.encode(), PASSWORD.encode())

_token = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_!#", min_size=1)
_methods = (
    st.sampled_from(
        [b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"TRACE", b"CONNECT", b"PATCH"]
    )
    | _token.map(str.encode)
    | st.binary(min_size=1, max_size=20)
)
_paths = st.sampled_from(
    [b"/metrics", b"/metrics/", b"/healthz", b"/", b"*", b"http://127.0.0.1/metrics", b""]
) | st.builds(
    lambda parts: b"/" + b"/".join(parts),
    st.lists(
        st.binary(max_size=30) | st.sampled_from([b"..", b"%00", b"%ff", b"%2e%2e", b"metrics"]),
        max_size=5,
    ),
)
_versions = st.sampled_from(
    [b"HTTP/1.1", b"HTTP/1.0", b"", b"HTTP/2.0", b"HTTP/9.9", b"HTTP/1.1.1", b"http/1.1", b"HTTP/"]
) | st.binary(max_size=10)
_auth = st.one_of(
    st.just(GOOD),
    st.builds(_basic, st.sampled_from([b"prom", b"other", b"", b"nobody"]), st.binary(max_size=80)),
    st.builds(
        lambda n, c: _basic(b"prom", c * n),
        st.integers(60, 20_000),
        st.sampled_from([b"x", b"\xe9"]),
    ),
    st.sampled_from(
        [
            b"Basic",
            b"Basic ",
            b"Basic !!!!",
            b"Basic " + base64.b64encode(b"nocolon"),
            b"Basic " + base64.b64encode(b"prom:" + PASSWORD.encode())[:-2],
            b"Basic =" + GOOD[6:],
            b"Bearer " + GOOD[6:],
            b"basic " + GOOD[6:],
            GOOD + b" x",
        ]
    ),
    st.binary(max_size=100),
)
_header_names = st.sampled_from(
    [b"Host", b"Content-Length", b"Transfer-Encoding", b"Expect", b"Connection", b"Accept"]
) | _token.map(str.encode)
_headers = st.lists(
    st.tuples(
        _header_names,
        st.binary(max_size=60).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
        | st.sampled_from([b"-1", b"99999999999999999999", b"chunked", b"100-continue"]),
    ),
    max_size=8,
)


class Drawn:
    """A drawn request: its bytes, and whether its only Authorization header is the right
    one.  Its repr is short (huge heads are what is being tested, not what to print)."""

    def __init__(self, data: bytes, authorized: bool) -> None:
        self.data = data
        self.authorized = authorized

    def __repr__(self) -> str:
        shown = self.data if len(self.data) <= 400 else self.data[:300] + b"..." + self.data[-60:]
        return f"Drawn({shown!r}, {len(self.data)} bytes, authorized={self.authorized})"


@st.composite
def requests(draw: st.DrawFn) -> Drawn:
    """A raw request (:class:`Drawn`)."""
    method, path, version = draw(_methods), draw(_paths), draw(_versions)
    line = b" ".join(part for part in (method, path, version) if part)
    head = [line.replace(b"\r", b"").replace(b"\n", b"")]
    auths = draw(st.lists(_auth, max_size=2))
    for name, value in draw(_headers):
        head.append(name + b": " + value)
    head.extend(
        b"Authorization: " + value.replace(b"\r", b"").replace(b"\n", b"") for value in auths
    )
    if draw(st.booleans()):
        head.append(b"X-Huge: " + b"h" * draw(st.integers(1000, 40_000)))
    if draw(st.booleans()):
        head.extend(b"X-Many-%d: y" % i for i in range(draw(st.integers(50, 400))))
    body = draw(st.binary(max_size=200))
    return Drawn(b"\r\n".join(head) + b"\r\n\r\n" + body, auths == [GOOD])


def exchange(port: int, data: bytes) -> tuple[bytes, bool]:
    """Send, half-close, read until the server closes: the answer, and whether the server
    reset the connection (it closed with our bytes unread: what came before is the answer).
    A socket timeout (no answer and no close) fails the test."""
    answer, reset = b"", False
    with socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT_S) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            if exc.errno not in _CLOSED:
                raise
            reset = True
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except OSError as exc:
            if exc.errno not in _CLOSED:
                raise
            reset = True
    return answer, reset


def still_serving(port: int) -> None:
    request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: " + GOOD + b"\r\n\r\n"
    answer, _reset = exchange(port, request)
    assert answer.startswith(b"HTTP/1.0 200 "), answer[:200]
    assert b"# HELP pgwarden_" in answer


@FUZZ
@given(made=requests())
def test_every_request_gets_a_well_formed_answer_or_a_close(
    server: MetricsServer, made: Drawn
) -> None:
    data, authorized = made.data, made.authorized
    answer, reset = exchange(server.port, data)
    if answer:
        match = _STATUS.match(answer)
        assert match, answer[:300]
        status = int(match[1])
        assert status in ALLOWED, answer[:300]
        assert reset or b"\r\n\r\n" in answer, answer[:300]
        if status == 200:
            assert authorized, (data[:300], answer[:300])
    still_serving(server.port)


def test_slow_and_silent_clients_are_dropped_and_the_listener_serves(
    server: MetricsServer,
) -> None:
    """A client that sends half a head and waits, and one that sends nothing: each answered
    or closed by the deadline (the socket timeout bounds the wait); /metrics is served."""
    for partial in (b"", b"GET /metrics HTTP/1.1\r\nHost: x\r\n", b"G"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=CLIENT_TIMEOUT_S) as s:
            s.sendall(partial)
            answer = b""
            try:
                while chunk := s.recv(65536):
                    answer += chunk
            except ConnectionResetError:
                answer = b""
        assert answer == b"" or _STATUS.match(answer), answer[:200]
        still_serving(server.port)
