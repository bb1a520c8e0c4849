"""The wire protocol's pure parts: request parsing, argument checks, redaction, exit codes."""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgwarden.config import Secret
from pgwarden.control import protocol
from pgwarden.control.client import _unreachable
from pgwarden.errors import ControlError
from pgwarden.redaction import redact_value as redact


def test_a_request_round_trip() -> None:
    request = protocol.parse_request(b'{"id": 3, "cmd": "backup", "args": {"target": "app"}}')
    assert request == protocol.Request(3, "backup", {"target": "app"})
    assert protocol.parse_request(b'{"cmd": "status"}') == protocol.Request(None, "status", {})
    assert protocol.parse_request(b'{"id": "x", "cmd": "jobs", "args": null}').args == {}


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        (b"{", "not JSON"),
        (b"\xc3\x28", "not UTF-8"),
        (b'"hello"', "JSON object"),
        (b'{"cmd": ""}', "cmd must be"),
        (b'{"cmd": "x", "id": true}', "id must be"),
        (b'{"cmd": "x", "id": 1.5}', "id must be"),
        (b'{"cmd": "x", "args": 1}', "args must be"),
        (b'{"cmd": "x", "bogus": 1}', "unknown request key"),
        (b"[" * 100_000 + b"]" * 100_000, "request"),
        (b'{"cmd": "x", "id": ' + b"1" * 4301 + b"}", "too long"),
        (b'{"cmd": "x", "id": -9007199254740992}', "id must be"),
        (b'{"cmd": "x", "id": "' + b"i" * 201 + b'"}', "id must be"),
        (b'{"cmd": "x", "id": "\\ud800"}', "surrogate"),
        (b'{"cmd": "x", "args": {"a": ["\\udc00"]}}', "surrogate"),
    ],
)
def test_malformed_requests(line: bytes, needle: str) -> None:
    with pytest.raises(ControlError) as info:
        protocol.parse_request(line)
    assert info.value.code == "bad_request"
    assert needle in str(info.value)


def test_ids_in_range_pass_and_an_answer_never_fails_to_encode() -> None:
    assert protocol.parse_request(b'{"cmd": "x", "id": 9007199254740991}').id == 2**53 - 1
    assert protocol.parse_request(b'{"cmd": "x", "id": "' + b"i" * 200 + b'"}').id == "i" * 200
    line = protocol.error(1, "bad_request", "name \ud800")
    assert json.loads(line)["error"]["message"] == "name \ud800"


def test_args_are_typed_and_unknown_ones_refused() -> None:
    args = protocol.Args("prune", {"target": "app", "dry_run": True, "tags": ["a"]})
    assert args.text("target") == "app"
    assert args.flag("dry_run") is True
    assert args.flag("wait") is False
    assert args.text_list("tags") == ["a"]
    args.finish()
    for data, reader in (
        ({"target": 1}, lambda a: a.text("target")),
        ({}, lambda a: a.text("target")),
        ({"target": ""}, lambda a: a.opt_text("target")),
        ({"wait": "yes"}, lambda a: a.flag("wait")),
        ({"tags": "a"}, lambda a: a.text_list("tags")),
        ({"dryrun": True}, lambda a: a.finish()),
    ):
        with pytest.raises(ControlError) as info:
            reader(protocol.Args("prune", data))
        assert info.value.code == "bad_argument"
        assert info.value.exit_code == 2


@pytest.mark.parametrize(
    ("code", "exit_code"),
    [
        ("bad_request", 2),
        ("not_found", 2),
        ("config", 2),
        ("forbidden", 3),
        ("busy", 1),
        ("internal", 1),
        ("backup_failed", 1),
        ("timeout", 1),
    ],
)
def test_error_codes_map_to_cli_exit_codes(code: str, exit_code: int) -> None:
    assert protocol.exit_code_for(code) == exit_code


_secret_text = st.text(max_size=20).map(lambda s: f"S3CR3T-{s}")
_values = st.recursive(
    st.none() | st.integers() | st.floats() | st.text(max_size=10) | _secret_text.map(Secret),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=15,
)


def _secrets(value: Any) -> list[str]:
    if isinstance(value, Secret):
        return [value.reveal()]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _secrets(v)]
    if isinstance(value, list):
        return [s for v in value for s in _secrets(v)]
    return []


@given(_values)
def test_no_secret_value_survives_encoding(value: Any) -> None:
    line = protocol.ok(1, {"value": value})
    decoded = json.loads(line)  # always valid JSON (NaN and infinities become null)
    assert decoded["ok"] is True
    plain = json.dumps(decoded["result"])
    for secret in _secrets(value):
        assert json.dumps(secret)[1:-1] not in plain.replace('"***"', "")


def test_redaction_of_keys_inline_passwords_and_types() -> None:
    out = redact(
        {
            "password": "hunter2",
            "nested": {"token": "t0k"},
            "dsn": "postgresql://u:pw@host/db",
            "conninfo": "host=x password=pw",
            "path": Path("/x"),
            "nan": float("nan"),
            "set": {1},
        }
    )
    assert out["password"] == "***"
    assert out["nested"]["token"] == "***"
    assert "pw" not in out["dsn"]
    assert out["conninfo"] == "host=x password=***"
    assert out["path"] == "/x"
    assert out["nan"] is None
    assert out["set"] == [1]


@pytest.mark.parametrize(
    ("exc", "needle"),
    [
        (FileNotFoundError(errno.ENOENT, "No such file"), "the daemon is not running"),
        (PermissionError(errno.EACCES, "Permission denied"), "socket's group"),
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), "stale socket"),
        (TimeoutError(), "did not answer in time"),
    ],
)
def test_unreachable_names_the_socket_and_the_likely_cause(exc: OSError, needle: str) -> None:
    error = _unreachable(Path("/run/pgwarden/control.sock"), exc)
    assert error.exit_code == 3
    assert "/run/pgwarden/control.sock" in str(error)
    assert needle in str(error)
