"""The control socket's wire protocol: JSON lines, one request or answer per line.

A request is ``{"id": 1, "cmd": "backup", "args": {"target": "app"}}`` (``id`` an integer
within +-(2**53 - 1) or a string of at most 200 characters, chosen by the client and echoed
back; ``args`` optional).  An answer is
``{"id": 1, "ok": true, "result": {...}}`` or ``{"id": 1, "ok": false, "error": {"code": ...,
"message": ...}}``.  A command asked to wait sends events before its answer:
``{"id": 1, "event": "progress", "data": {...}}``.  A request line is at most
:data:`MAX_LINE` bytes, UTF-8; blank lines are ignored.

This module owns the framing, the error codes (and the CLI exit code each maps to) and
argument validation (:class:`Args`).  Every outgoing message goes through
:func:`pgwarden.redaction.redact_value`, the last line of defence against secrets.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pgwarden.errors import EXIT_FAILED, EXIT_UNREACHABLE, EXIT_USAGE, ControlError
from pgwarden.redaction import redact_value as redact

PROTOCOL_VERSION = 1
MAX_LINE = 64 * 1024  # bytes per request line, newline excluded
READ_TIMEOUT = 10.0  # seconds a client has for one whole request (blank lines do not extend it)

# error codes of the protocol (handlers may also answer a PgwardenError's own code)
BAD_REQUEST = "bad_request"  # not JSON, not an object, wrong shape
UNKNOWN_COMMAND = "unknown_command"
BAD_ARGUMENT = "bad_argument"  # missing, unknown or mistyped argument
NOT_FOUND = "not_found"  # no such target, backup or job
BUSY = "busy"  # too many connections, or a conflicting job
FORBIDDEN = "forbidden"  # the peer's uid is not allowed
TOO_LARGE = "too_large"  # request line over MAX_LINE
TIMEOUT = "timeout"  # no complete request within READ_TIMEOUT
INTERNAL = "internal"  # a bug in a handler; logged by the daemon

_USAGE_CODES = frozenset(
    {BAD_REQUEST, UNKNOWN_COMMAND, BAD_ARGUMENT, NOT_FOUND, TOO_LARGE, "usage", "config"}
)
_UNREACHABLE_CODES = frozenset({FORBIDDEN, "unreachable"})
_REQUEST_KEYS = frozenset({"id", "cmd", "args"})


def exit_code_for(code: str) -> int:
    """The CLI exit code for an error code (DESIGN.md: 1 failed, 2 usage/config, 3 unreachable)."""
    if code in _USAGE_CODES:
        return EXIT_USAGE
    if code in _UNREACHABLE_CODES:
        return EXIT_UNREACHABLE
    return EXIT_FAILED


def control_error(code: str, message: str) -> ControlError:
    return ControlError(code, message, exit_code_for(code))


RequestId = int | str | None


@dataclass(frozen=True)
class Peer:
    """Who is on the other end of a connection (from SO_PEERCRED)."""

    pid: int
    uid: int
    gid: int
    user: str  # the uid's name, or the number when it has no passwd entry


@dataclass(frozen=True)
class Request:
    id: RequestId
    cmd: str
    args: dict[str, Any]


MAX_ID = 2**53 - 1  # integer ids: what any JSON client (JavaScript included) holds exactly
MAX_ID_CHARS = 200


def peek_id(data: object) -> RequestId:
    """The request id if ``data`` carries a usable one (so that errors can echo it)."""
    if isinstance(data, dict):
        value = data.get("id")
        if isinstance(value, str) and len(value) <= MAX_ID_CHARS:
            return value
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_ID:
            return value
    return None


def _decode(line: bytes) -> object:
    """The JSON value of a request line; ``bad_request`` for anything that is not clean JSON."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise control_error(BAD_REQUEST, f"the request is not UTF-8 (byte {exc.start})") from exc
    try:
        data = json.loads(text)
    except RecursionError as exc:
        raise control_error(BAD_REQUEST, "the request is nested too deeply") from exc
    except json.JSONDecodeError as exc:
        raise control_error(BAD_REQUEST, f"the request is not JSON: {exc.msg}") from exc
    except ValueError as exc:  # an integer over Python's 4,300-digit conversion limit
        raise control_error(BAD_REQUEST, "the request holds a number too long to read") from exc
    try:  # a lone surrogate ("\ud800") is valid JSON but no text: it cannot be echoed
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise control_error(BAD_REQUEST, "the request holds a lone UTF-16 surrogate") from exc
    except (ValueError, RecursionError) as exc:
        raise control_error(BAD_REQUEST, "the request cannot be read back") from exc
    return data


def parse_request(line: bytes) -> Request:
    """Decode one request line; :class:`ControlError` (``bad_request``) when malformed."""
    data = _decode(line)
    if not isinstance(data, dict):
        raise control_error(BAD_REQUEST, "the request must be a JSON object")
    unknown = sorted(set(data) - _REQUEST_KEYS)
    if unknown:
        raise control_error(BAD_REQUEST, f"unknown request key(s): {', '.join(unknown)}")
    request_id = data.get("id")
    if request_id is not None and peek_id(data) is None:
        raise control_error(
            BAD_REQUEST,
            f"id must be an integer within +-{MAX_ID} or a string of at most"
            f" {MAX_ID_CHARS} characters",
        )
    cmd = data.get("cmd")
    if not isinstance(cmd, str) or not cmd:
        raise control_error(BAD_REQUEST, "cmd must be a non-empty string")
    args = data.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise control_error(BAD_REQUEST, "args must be a JSON object")
    return Request(peek_id(data), cmd, args)


# -- framing -------------------------------------------------------------------------------
class TooLargeError(Exception):
    """A request line longer than :data:`MAX_LINE`."""


class LineReader:
    """Newline-framed reads with a size limit and a deadline per line."""

    def __init__(self, conn: socket.socket, limit: int) -> None:
        self._conn = conn
        self._limit = limit
        self._buf = bytearray()
        self.eof = False

    def readline(self, timeout: float) -> bytes | None:
        """The next line (without its newline); ``None`` at end of stream."""
        deadline = time.monotonic() + timeout
        while True:
            index = self._buf.find(b"\n")
            if index >= 0:
                line = bytes(self._buf[:index])
                del self._buf[: index + 1]
                if len(line) > self._limit:
                    raise TooLargeError
                return line
            if len(self._buf) > self._limit:
                raise TooLargeError
            if self.eof:
                line, self._buf = bytes(self._buf), bytearray()
                return line or None  # a last line without newline still counts
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            self._conn.settimeout(remaining)
            chunk = self._conn.recv(65536)
            if not chunk:
                self.eof = True
            self._buf += chunk


# -- answers ---------------------------------------------------------------------------------
def encode(message: Mapping[str, Any]) -> bytes:
    """One message as a JSON line (redacted)."""
    clean = redact(message)
    try:
        return json.dumps(clean, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
    except UnicodeEncodeError:  # a lone surrogate somewhere: JSON escapes keep it ASCII
        return json.dumps(clean, ensure_ascii=True, separators=(",", ":")).encode() + b"\n"


def ok(request_id: RequestId, result: Mapping[str, Any]) -> bytes:
    return encode({"id": request_id, "ok": True, "result": result})


def error(request_id: RequestId, code: str, message: str) -> bytes:
    return encode({"id": request_id, "ok": False, "error": {"code": code, "message": message}})


def event(request_id: RequestId, name: str, data: Mapping[str, Any]) -> bytes:
    return encode({"id": request_id, "event": name, "data": data})


# -- arguments -----------------------------------------------------------------------------
class Args:
    """Typed access to a request's ``args``; every problem is a ``bad_argument`` error.

    Handlers read what they need, then call :meth:`finish`, which refuses arguments nobody
    asked for (a typo such as ``"dryrun"`` must not silently do the real thing).
    """

    def __init__(self, cmd: str, data: Mapping[str, Any]) -> None:
        self.cmd = cmd
        self._data = data
        self._seen: set[str] = set()

    def _bad(self, name: str, message: str) -> ControlError:
        return control_error(BAD_ARGUMENT, f"{self.cmd}: argument {name!r} {message}")

    def _get(self, name: str) -> Any:
        self._seen.add(name)
        return self._data.get(name)

    def text(self, name: str) -> str:
        value = self.opt_text(name)
        if value is None:
            raise self._bad(name, "is required")
        return value

    def opt_text(self, name: str) -> str | None:
        value = self._get(name)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise self._bad(name, f"must be a non-empty string (got {_kind(value)})")
        if len(value) > 1000:
            raise self._bad(name, "is too long")
        return value

    def flag(self, name: str, default: bool = False) -> bool:
        value = self._get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self._bad(name, f"must be true or false (got {_kind(value)})")
        return value

    def text_list(self, name: str) -> list[str]:
        value = self._get(name)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self._bad(name, "must be a list of non-empty strings")
        return list(value)

    def finish(self) -> None:
        unknown = sorted(set(self._data) - self._seen)
        if unknown:
            raise control_error(
                BAD_ARGUMENT, f"{self.cmd}: unknown argument(s): {', '.join(map(repr, unknown))}"
            )


def _kind(value: object) -> str:
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
        type(None): "null",
    }
    if isinstance(value, str):
        return "an empty string"
    return names.get(type(value), type(value).__name__)
