"""What an unauthenticated client can make the metrics listener do (issue 16, item 2).

Real HTTP over loopback against a real :class:`MetricsServer`: bcrypt users (several, ``$2y$``
included), oversized headers and passwords answered at once, the connection cap, a slow-loris
client dropped within the deadline, and ``pgwarden config check`` refusing a SHA-crypt hash.
"""

from __future__ import annotations

import base64
import contextlib
import socket
import ssl
import statistics
import time
from pathlib import Path

import bcrypt

from pgwarden.metrics import Metrics
from pgwarden.metrics.auth import BasicAuth
from pgwarden.metrics.http import tls_context
from pgwarden.redaction import redact_fields
from tests.test_config import run_cli
from tests.test_metrics import basic, bcrypt_hash, get, self_signed, serving


def raw_request(port: int, data: bytes, timeout: float = 10) -> tuple[bytes, float]:
    """Send ``data``, read the answer until the server closes; the answer and the time taken."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionError:  # closed with unread data: a reset, not an answer
            answer = b""
    return answer, time.monotonic() - started


def auth_header(user: str, password: str) -> bytes:
    token = base64.b64encode(f"{user}:{password}".encode())
    return b"Authorization: Basic " + token + b"\r\n"


def test_several_bcrypt_users_good_bad_and_unknown() -> None:
    y_hash = bcrypt_hash("second-pw").replace("$2b$", "$2y$", 1)  # what htpasswd -B makes
    auth = BasicAuth({"prometheus": bcrypt_hash("scrape-me"), "grafana": y_hash})
    with serving(Metrics(), auth=auth) as server:
        url = f"http://127.0.0.1:{server.port}/metrics"
        assert get(url, basic("prometheus", "scrape-me"))[0] == 200
        assert get(url, basic("grafana", "second-pw"))[0] == 200
        assert get(url, basic("grafana", "scrape-me"))[0] == 401  # another user's password
        assert get(url, basic("prometheus", "wrong"))[0] == 401
        assert get(url, basic("nobody", "scrape-me"))[0] == 401
        assert get(url, basic("prometheus", "scrape-me\x00"))[0] == 401
        assert (
            get(url, {"Authorization": "Basic " + base64.b64encode(b"nocolon").decode()})[0] == 401
        )
        assert get(url, basic("prometheus", "scrape-me"))[0] == 200  # remembered, still right


def test_password_beyond_72_bytes_fails_without_bcrypt_raising() -> None:
    password = "p" * 72  # bcrypt's limit: the longest password it hashes
    auth = BasicAuth({"u": bcrypt_hash(password)})
    with serving(Metrics(), auth=auth) as server:
        url = f"http://127.0.0.1:{server.port}/healthz"
        assert get(url, basic("u", password))[0] == 200
        # 73 bytes whose first 72 are right: bcrypt would truncate (or raise); refused
        assert get(url, basic("u", password + "p"))[0] == 401
        assert get(url, basic("u", "é" * 40))[0] == 401  # 80 bytes in UTF-8


def test_huge_passwords_are_answered_at_once() -> None:
    """A 10 KB password passes the head cap but not the 4 KiB Authorization cap: 401; a 70 KB
    one exceeds the 16 KiB request head: 431 (or a reset), never minutes of hashing."""
    auth = BasicAuth({"u": bcrypt_hash("pw")})
    with serving(Metrics(), auth=auth) as server:
        url = f"http://127.0.0.1:{server.port}/metrics"
        started = time.monotonic()
        assert get(url, basic("u", "x" * 10_000))[0] == 401
        assert get(url, basic("u", "x" * 3_000))[0] == 401  # under 4 KiB, over 72 bytes
        assert time.monotonic() - started < 2
        head = b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + auth_header("u", "x" * 70_000) + b"\r\n"
        answer, took = raw_request(server.port, head)
        assert answer == b"" or answer.startswith(b"HTTP/1.0 431"), answer[:80]
        assert took < 2
        many = b"GET /metrics HTTP/1.1\r\n" + b"X-Pad: " + b"y" * 100 + b"\r\n"
        answer, took = raw_request(server.port, many * 200 + b"\r\n")
        assert answer == b"" or answer.startswith(b"HTTP/1.0 431"), answer[:80]
        assert took < 2
        assert get(url, basic("u", "pw"))[0] == 200  # the server lived through it


def test_unknown_user_costs_what_a_wrong_password_costs() -> None:
    """No user enumeration by timing: an unknown user still pays one bcrypt check."""
    auth = BasicAuth({"prometheus": bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=11)).decode()})

    def median(user: str) -> float:
        times = []
        for _ in range(5):
            started = time.monotonic()
            assert not auth.check("Basic " + base64.b64encode(f"{user}:wrong".encode()).decode())
            times.append(time.monotonic() - started)
        return statistics.median(times)

    known, unknown = median("prometheus"), median("nobody")
    assert known > 0.02  # bcrypt at cost 11 really ran
    assert unknown > known / 3, (known, unknown)


def test_connections_beyond_the_cap_get_503_and_slots_come_back() -> None:
    with serving(Metrics(), max_connections=2, deadline_s=1.5) as server:
        idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(2)]
        try:
            time.sleep(0.2)  # both accepted and holding a slot, saying nothing
            answer, took = raw_request(server.port, b"")
            assert answer.startswith(b"HTTP/1.0 503"), answer
            assert took < 1
            for sock in idle:  # each dropped at its deadline
                sock.settimeout(5)
                assert sock.recv(100) == b""
        finally:
            for sock in idle:
                sock.close()
        assert get(f"http://127.0.0.1:{server.port}/healthz")[0] == 200


def test_a_slow_loris_client_is_dropped_at_the_deadline() -> None:
    """One deadline per connection: a byte every 0.2 s does not keep the thread."""
    with serving(Metrics(), deadline_s=1.0) as server:
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            closed = False
            for byte in b"GET /metrics HTTP/1.1\r\nX-Slow: " + b"z" * 100:
                try:
                    sock.send(bytes([byte]))
                except OSError:
                    closed = True
                    break
                sock.settimeout(0.2)
                try:
                    if sock.recv(100) == b"":
                        closed = True
                        break
                except TimeoutError:
                    pass
        took = time.monotonic() - started
        assert closed
        assert 0.9 < took < 2.5, took
        assert get(f"http://127.0.0.1:{server.port}/healthz")[0] == 200


def test_config_check_refuses_sha_crypt_with_the_way_to_a_bcrypt_hash(tmp_path: Path) -> None:
    path = tmp_path / "pgwarden.toml"
    base = (
        f'[daemon]\nstate_dir = "{tmp_path}/state"\n[storage]\npath = "{tmp_path}/b"\n'
        '[[targets]]\nname = "app"\ndsn = "postgresql://u@localhost/app"\n'
    )
    path.write_text(
        base + '[metrics]\nbasic_auth_user = "prom"\nbasic_auth_password_hash = "$6$salt$abc"\n'
    )
    result = run_cli("config", "check", "-c", str(path))
    assert result.returncode == 2
    assert "metrics.basic_auth_password_hash: SHA-crypt hashes ($5$, $6$)" in result.stderr
    assert "htpasswd -nBC 10" in result.stderr
    assert "$6$salt$abc" not in result.stderr  # a hash is a secret: never echoed
    good = bcrypt_hash("pw")
    path.write_text(
        base + f'[metrics.basic_auth_users]\nprom = "{good}"\nother = "$5$x$y"\n"a:b" = "{good}"\n'
    )
    result = run_cli("config", "check", "-c", str(path))
    assert result.returncode == 2
    assert "metrics.basic_auth_users.other: SHA-crypt" in result.stderr
    assert "metrics.basic_auth_users.'a:b': a user name cannot hold ':'" in result.stderr
    path.write_text(base + f'[metrics.basic_auth_users]\nprom = "{good}"\n')
    assert run_cli("config", "check", "-c", str(path)).returncode == 0
    shown = run_cli("config", "show", "-c", str(path))
    assert shown.returncode == 0, shown.stderr
    assert good not in shown.stdout
    assert "[metrics.basic_auth_users]" in shown.stdout


def test_basic_auth_users_are_a_secret_key_in_logs() -> None:
    hashed = bcrypt_hash("pw")
    event = redact_fields({"event": "x", "basic_auth_users": {"prom": hashed}})
    assert hashed not in repr(event)


def client_hello() -> bytes:
    """The first bytes a TLS client sends (made in memory, nothing connected)."""
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with contextlib.suppress(ssl.SSLWantReadError):  # it waits for the server's answer
        client.do_handshake()
    return outgoing.read()


def test_a_tls_handshake_trickled_byte_by_byte_is_dropped_at_the_deadline(
    workdir: Path,
) -> None:
    cert, key = self_signed(workdir)
    hello = client_hello()
    assert len(hello) > 50
    with serving(Metrics(), tls=tls_context(cert, key), deadline_s=1.0) as server:
        started = time.monotonic()
        closed = False
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            for byte in hello:
                try:
                    sock.send(bytes([byte]))
                    sock.settimeout(0.2)
                    if sock.recv(100) == b"":
                        closed = True
                        break
                except TimeoutError:
                    continue
                except OSError:
                    closed = True
                    break
        took = time.monotonic() - started
        assert closed
        assert 0.9 < took < 2.5, took
        trusting = ssl.create_default_context(cafile=str(cert))
        assert get(f"https://127.0.0.1:{server.port}/healthz", context=trusting)[0] == 200
