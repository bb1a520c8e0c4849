"""Fuzzing the control socket (issue 16, the faults suite).

The real :class:`~pgwarden.control.server.ControlServer` on a real Unix socket, in front of the
real service (``tests/test_control_support.py``'s harness: real job pool, scheduler, catalog
and config; trivial job bodies).  Hypothesis sends lines of random bytes, random JSON,
request-shaped objects with huge, fractional or surrogate ids and arguments, deep nesting and
lines over the 64 KiB limit, several per connection, then a ``status`` request.  Every line
gets exactly one final answer (a ``bad_request``-like error or a proper answer), never an
``internal`` one; a line over the limit gets ``too_large`` and the connection closes; the
``status`` request is answered, on the same connection or a new one; the server logs no
traceback.  Partial lines followed by a close leave the server serving.

Derandomized (``derandomize=True``): the same examples on every run.
"""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgwarden.control import protocol
from tests.test_control_support import Harness, raw_exchange, request_line, short_dir

EXAMPLES = 250
PROBE_ID = "probe-c2"
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


@pytest.fixture(scope="module")
def served() -> Iterator[Harness]:
    root = short_dir()
    h = Harness(root)
    try:
        yield h
    finally:
        h.close()
        shutil.rmtree(root, ignore_errors=True)


def _surrogates() -> st.SearchStrategy[str]:
    return st.text(
        alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
        | st.characters(blacklist_categories=("Cs",)),
        max_size=12,
    )


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats()
    | _surrogates(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_surrogates(), inner, max_size=4),
    max_leaves=16,
)
_cmds = (
    st.sampled_from(["status", "jobs", "job", "backups", "hello", "config", "nope", "", "STATUS"])
    | _surrogates()
)
_args = st.dictionaries(
    st.sampled_from(["target", "backup", "id", "dry_run", "tags", "x"]) | _surrogates(),
    st.sampled_from(["app", "nosuch", "", "0" * 32]) | _json,
    max_size=4,
)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=True, allow_nan=True).encode()


_requests = st.fixed_dictionaries(
    {"cmd": _cmds}, optional={"id": _json, "args": _args | _json, "extra": _json}
).map(_dumps)


def _huge_id(digits: int, cmd: str) -> bytes:
    return b'{"id": ' + b"9" * digits + b', "cmd": ' + _dumps(cmd) + b"}"


def _deep(n: int, kind: str) -> bytes:
    nested = b"[" * n + b"]" * n if kind == "list" else b'{"a":' * n + b"1" + b"}" * n
    return b'{"id": 1, "cmd": "status", "args": {"x": ' + nested + b"}}"


def _long(n: int, fill: bytes) -> bytes:
    return b'{"id": 1, "cmd": "status", "args": {"x": "' + fill * n + b'"}}'


# big lines are drawn as (builder, parameters): their reprs stay short when an example fails
_built = (
    st.tuples(st.just(_huge_id), st.integers(16, 6000), _cmds)
    | st.tuples(st.just(_deep), st.integers(1, 12_000), st.sampled_from(["list", "object"]))
    | st.tuples(
        st.just(_long),
        st.integers(protocol.MAX_LINE - 100, protocol.MAX_LINE + 5000),
        st.sampled_from([b"a", b"\\ud800", b"\xff"]),
    )
)
_small = st.binary(max_size=512) | _requests | _json.map(_dumps)
_lines = st.lists(_small | _built, min_size=1, max_size=4)


def build(line: bytes | tuple[Any, ...]) -> bytes:
    made = line if isinstance(line, bytes) else line[0](*line[1:])
    return made.replace(b"\n", b" ")


def exchange(path: str, payload: bytes) -> list[dict[str, Any]]:
    """Send (the server may close early: a line over the limit), half-close, read every
    answer line until the server closes or resets."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(path)
        data = b""
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed after answering too_large: the answers are waiting
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass  # closed with our unread bytes: what came before the reset is the answer
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def _finals(answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [a for a in answers if "ok" in a]


def probe(h: Harness) -> None:
    answers = raw_exchange(h.socket, request_line("status", rid=PROBE_ID))
    assert answers[-1]["id"] == PROBE_ID
    assert answers[-1]["ok"] is True
    assert {t["name"] for t in answers[-1]["result"]["targets"]} == {"app", "shop", "broken"}


@FUZZ
@given(drawn=_lines)
def test_every_line_gets_one_answer_and_status_still_works(
    served: Harness, drawn: list[bytes | tuple[Any, ...]], capfd: pytest.CaptureFixture[str]
) -> None:
    lines = [build(line) for line in drawn]
    payload = b"\n".join(lines) + b"\n" + request_line("status", rid=PROBE_ID)
    answers = exchange(str(served.socket), payload)
    finals = _finals(answers)
    assert all(isinstance(a, dict) for a in answers)
    for answer in finals:
        if not answer["ok"]:
            assert answer["error"]["code"] != protocol.INTERNAL, answer
            assert answer["error"]["message"], answer
    counted = [line for line in lines if line.strip()]
    too_long = [i for i, line in enumerate(counted) if len(line) > protocol.MAX_LINE]
    if too_long:
        first = too_long[0]
        assert len(finals) == first + 1, (len(finals), first)
        assert finals[-1]["error"]["code"] == protocol.TOO_LARGE
        probe(served)  # the connection was closed; a new one is served
    else:
        assert len(finals) == len(counted) + 1, (finals, counted)
        assert finals[-1]["id"] == PROBE_ID
        assert finals[-1]["ok"] is True
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err
    assert "control command failed" not in out + err
    assert "control connection failed" not in out + err


@pytest.mark.parametrize(
    "partial",
    [
        b'{"id": 1, "cmd": "sta',
        b'{"id": "\\ud8',
        b"\xff\xfe\x00",
        b"[" * 30_000,
        b"x" * (protocol.MAX_LINE - 1),
        b"x" * (protocol.MAX_LINE + 10),
        b'{"id": 1, "cmd": "status"}',  # a whole request, no newline
        b"",
    ],
)
def test_partial_lines_then_close_leave_the_server_serving(
    served: Harness, partial: bytes, capfd: pytest.CaptureFixture[str]
) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(str(served.socket))
        sock.sendall(partial)
        sock.close()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(str(served.socket))
        sock.sendall(partial)
        sock.shutdown(socket.SHUT_WR)  # half-closed: whatever answer comes is well-formed
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    for line in data.splitlines():
        answer = json.loads(line)
        assert "ok" in answer
        if not answer["ok"]:
            assert answer["error"]["code"] != protocol.INTERNAL
    probe(served)
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err
