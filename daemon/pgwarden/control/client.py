"""The control socket client used by ``pgwarden ctl`` (and by tests and scripts).

:meth:`ControlClient.call` sends one request and returns its ``result``;
:meth:`ControlClient.stream` also yields the ``progress`` events sent before the answer.  An
error answer raises :class:`~pgwarden.errors.ControlError` (its exit code follows the error
code); a daemon that cannot be reached raises :class:`~pgwarden.errors.DaemonUnreachable`
naming the socket and the likely cause: not running, no permission, or a stale socket.
"""

from __future__ import annotations

import errno
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgwarden.control import protocol
from pgwarden.errors import DaemonUnreachable, PgwardenError

DEFAULT_SOCKET = Path("/run/pgwarden/control.sock")
CALL_TIMEOUT = 30.0  # seconds to wait for an answer (reload waits up to 10 s itself)
STREAM_TIMEOUT = 60.0  # seconds of silence tolerated while following a job (heartbeats: 5 s)


@dataclass(frozen=True)
class Message:
    """One line of a streamed answer: an event (``progress``...) or the final ``result``."""

    kind: str
    data: dict[str, Any]


def _unreachable(path: Path, exc: OSError) -> DaemonUnreachable:
    code = exc.errno
    if isinstance(exc, FileNotFoundError) or code == errno.ENOENT:
        why = "no such socket: the daemon is not running (systemctl start pgwarden), or it "
        why += "uses another socket (pass --socket, or -c with the daemon's config)"
    elif isinstance(exc, PermissionError) or code in (errno.EACCES, errno.EPERM):
        why = "permission denied: run as root or as a member of the socket's group "
        why += "(see [daemon] socket_group and allowed_groups)"
    elif isinstance(exc, ConnectionRefusedError) or code == errno.ECONNREFUSED:
        why = "connection refused: a stale socket left by a daemon that is no longer running"
    elif isinstance(exc, BlockingIOError) or code == errno.EAGAIN:
        why = "the daemon's listen queue stayed full: it is overloaded or hung"
    elif isinstance(exc, TimeoutError):
        why = "the daemon did not answer in time"
    else:
        why = exc.strerror or str(exc)
    return DaemonUnreachable(f"cannot reach the pgwarden daemon at {path}: {why}")


class ControlClient:
    def __init__(
        self, socket_path: Path | str = DEFAULT_SOCKET, timeout: float = CALL_TIMEOUT
    ) -> None:
        self.path = Path(socket_path)
        self.timeout = timeout
        self._next_id = 0

    def call(self, cmd: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one request; its ``result``.  Events, if any, are skipped."""
        result: dict[str, Any] = {}
        for message in self.stream(cmd, args, timeout=self.timeout):
            if message.kind == "result":
                result = message.data
        return result

    def stream(
        self, cmd: str, args: dict[str, Any] | None = None, *, timeout: float = STREAM_TIMEOUT
    ) -> Iterator[Message]:
        """Send one request; yield its events, then a ``result`` message last."""
        self._next_id += 1
        request_id = self._next_id
        line = json.dumps({"id": request_id, "cmd": cmd, "args": args or {}}).encode() + b"\n"
        with self._connect(min(timeout, 10.0)) as sock:
            try:
                sock.sendall(line)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the daemon may have answered (forbidden) and closed: read it below
            except OSError as exc:
                raise _unreachable(self.path, exc) from exc
            sock.settimeout(timeout)
            yield from self._read(sock, request_id)

    def _connect(self, timeout: float) -> socket.socket:
        """A connected socket; a full listen queue (EAGAIN) is retried until ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(str(self.path))
            except BlockingIOError as exc:
                sock.close()
                if time.monotonic() >= deadline:
                    raise _unreachable(self.path, exc) from exc
                time.sleep(0.02)
                continue
            except OSError as exc:
                sock.close()
                raise _unreachable(self.path, exc) from exc
            return sock

    def _read(self, sock: socket.socket, request_id: int) -> Iterator[Message]:
        with sock.makefile("rb") as stream:
            while True:
                try:
                    raw = stream.readline()
                except TimeoutError as exc:
                    raise _unreachable(self.path, exc) from exc
                except OSError as exc:
                    raise DaemonUnreachable(
                        f"the pgwarden daemon at {self.path} closed the connection: {exc}"
                    ) from exc
                if not raw:
                    raise DaemonUnreachable(
                        f"the pgwarden daemon at {self.path} closed the connection without "
                        "answering (is it stopping?)"
                    )
                try:
                    message = json.loads(raw)
                except ValueError:
                    message = None
                if not isinstance(message, dict):
                    raise PgwardenError(f"unexpected answer from {self.path}: {raw[:80]!r}")
                if message.get("id") not in (request_id, None):
                    continue
                if "event" in message:
                    yield Message(str(message["event"]), dict(message.get("data") or {}))
                    continue
                if message.get("ok"):
                    yield Message("result", dict(message.get("result") or {}))
                    return
                error = message.get("error") or {}
                code = str(error.get("code", "failed"))
                raise protocol.control_error(code, str(error.get("message", "request failed")))
