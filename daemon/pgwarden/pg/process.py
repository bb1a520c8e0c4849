"""Running external tools: the one module of pgwarden that starts processes.

Every ``pg_dump``, ``pg_restore``, ``psql`` and ``--version`` probe goes through here: an argv
list, never a shell; an explicit environment, required (:mod:`pgwarden.pg.environment`,
``ConnSpec.tool_env``: the password travels in a pgpass file; the daemon's own environment is
never inherited); a new session per tool, so that cancelling reaches its children (``pg_dump -j``
workers); stdout streamed in chunks of up to 1 MiB while a thread drains stderr *at the same
time*, each line redacted, logged and the last :data:`TAIL_LINES` kept; cancellation (an event
set, or the timeout) sends SIGTERM to the group, waits :data:`GRACE_S`, then SIGKILL.

* :func:`run_tool` runs one tool to completion, stdout to a file object or a callback, stdin
  optionally fed from a file object; :func:`check` turns a failed :class:`ToolResult` into a
  :class:`~pgwarden.errors.ToolError`.
* :func:`run_pipeline` runs ``producer | consumer`` (``gunzip -c x.sql.gz | psql``).
* :func:`start_tool` is the building block: a :class:`RunningTool` whose ``.stdout`` the caller
  reads itself (the backup streams ``pg_dump`` through compression and sha256), then ``.wait()``;
  as a context manager, leaving the block early terminates the group.  To chain tools by hand,
  pass ``first.stdout`` as the second's ``stdin=`` and close it here (:func:`run_pipeline`).
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import logging
import os
import re
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import IO, cast

from pgwarden.errors import ToolError
from pgwarden.pg.parentdeath import parent_death_argv
from pgwarden.pg.priority import carry_to_session
from pgwarden.pg.tooltypes import AnyLogger, Readable, Sink, ToolLogger, ToolResult, check
from pgwarden.redaction import redact

CHUNK = 1 << 20
GRACE_S = 5.0
TAIL_LINES = 20
PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL
_POLL_S = 0.05
_STRAGGLER_S = 2.0
_MAX_LINE = 64 * 1024

_NOTEWORTHY = re.compile(r"(?i)\b(error|fatal|panic|warning|detail|hint)\s*:")

__all__ = [  # ToolResult, check and redact are re-exported: callers import from here
    "CHUNK",
    "DEVNULL",
    "GRACE_S",
    "PIPE",
    "RunningTool",
    "ToolLogger",
    "ToolResult",
    "check",
    "redact",
    "run_pipeline",
    "run_tool",
    "start_tool",
]


def _killpg(pgid: int, sig: signal.Signals | int) -> bool:
    """Signal a process group; False if it has no member left."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


class RunningTool:
    """A started tool; see :func:`start_tool`.  ``stdout``/``stdin`` are raw pipes or ``None``."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        *,
        name: str,
        log: AnyLogger | None,
        timeout: float | None,
        cancel: threading.Event | None,
    ) -> None:
        self.name = name
        self.pid = proc.pid
        self.stdout: IO[bytes] | None = proc.stdout
        self.stdin: IO[bytes] | None = proc.stdin
        self._proc = proc
        self._log: AnyLogger = log if log is not None else logging.getLogger(__name__)
        self._tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._cancel = cancel
        self._cancelled = self._timed_out = False
        self._kill_lock = threading.Lock()
        self._started = time.monotonic()
        self._ended: float | None = None
        self._exited = threading.Event()
        self._deadline = None if timeout is None else self._started + timeout
        self._threads = [
            threading.Thread(target=self._watch, name=f"{name}-watch-{self.pid}", daemon=True),
            threading.Thread(target=self._drain, name=f"{name}-stderr-{self.pid}", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    # -- the two helper threads ---------------------------------------------------------------
    def _watch(self) -> None:
        while True:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=_POLL_S)
                break
            if self._cancel is not None and self._cancel.is_set():
                self._cancelled = True
            elif self._deadline is not None and time.monotonic() >= self._deadline:
                self._timed_out = True
            else:
                continue
            self._kill_group()
            break
        self._ended = time.monotonic()
        self._exited.set()
        # children left behind in the group hold the pipes open (a reader of stdout would
        # block for ever): they get a short grace, then SIGKILL.  While the group has members
        # its id cannot be reused by another process.
        deadline = self._ended + _STRAGGLER_S
        while _killpg(self.pid, 0):
            if time.monotonic() >= deadline:
                _killpg(self.pid, signal.SIGKILL)
                break
            time.sleep(_POLL_S)

    def _drain(self) -> None:
        assert self._proc.stderr is not None
        reader = io.BufferedReader(cast(io.RawIOBase, self._proc.stderr))
        with reader:
            while raw := reader.readline(_MAX_LINE):
                line = redact(raw.decode("utf-8", "replace").rstrip("\r\n"))
                if not line.strip():
                    continue
                self._tail.append(line)
                # a failing log handler must not stop the drain (the tool would block)
                with contextlib.suppress(Exception):
                    self._emit(line)

    def _emit(self, line: str) -> None:
        warn = bool(_NOTEWORTHY.search(line))
        log = self._log
        if isinstance(log, logging.Logger):
            log.log(
                logging.WARNING if warn else logging.INFO, "%s[%d]: %s", self.name, self.pid, line
            )
            return
        structured = cast(ToolLogger, log)  # mypy keeps logging.Logger in this branch
        emit = structured.warning if warn else structured.info
        emit("tool stderr", tool=self.name, pid=self.pid, line=line)

    # -- control ------------------------------------------------------------------------------

    def _kill_group(self, grace: float = GRACE_S) -> None:
        """SIGTERM to the group, up to ``grace`` seconds for the tool to exit, SIGKILL."""
        with self._kill_lock:
            if self._proc.poll() is None:
                _killpg(self.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._proc.wait(timeout=grace)
            # the group may outlive its leader (a child in the background): no survivors
            if self._proc.poll() is None or _killpg(self.pid, 0):
                _killpg(self.pid, signal.SIGKILL)
            self._proc.wait()

    def terminate_group(self, grace: float = GRACE_S) -> None:
        """Stop the tool and its children (SIGTERM, ``grace`` seconds, SIGKILL); it counts as
        cancelled if it was still running."""
        if self._proc.poll() is None:
            self._cancelled = True
        self._kill_group(grace)

    @property
    def running(self) -> bool:
        return self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit status once the tool has ended (negative: killed by that signal)."""
        return self._proc.poll()

    @property
    def stderr_tail(self) -> str:
        return "\n".join(self._tail)

    def wait(self) -> ToolResult:
        """Wait for the tool (its timeout and cancel event still apply) and its stderr."""
        self._exited.wait()
        # stragglers are killed _STRAGGLER_S after the exit; one that left the group (setsid)
        # and still holds stderr would keep the drain going: do not wait for it for ever
        self._threads[1].join(_STRAGGLER_S + 1.0)
        for pipe in (self.stdin, self.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        ended = self._ended if self._ended is not None else time.monotonic()
        returncode = self._proc.returncode
        assert returncode is not None
        return ToolResult(
            tool=self.name,
            returncode=returncode,
            stderr_tail=self.stderr_tail,
            duration_s=ended - self._started,
            cancelled=self._cancelled,
            timed_out=self._timed_out,
        )

    def __enter__(self) -> RunningTool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._proc.poll() is None:
            self.terminate_group()
        self.wait()


def start_tool(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    name: str | None = None,
    log: AnyLogger | None = None,
    stdin: int | IO[bytes] | None = DEVNULL,
    stdout: int | IO[bytes] | None = PIPE,
    timeout: float | None = None,
    cancel: threading.Event | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> RunningTool:
    """Start ``argv``; ``stdin``/``stdout`` take :data:`PIPE`, :data:`DEVNULL`, a descriptor or
    a file (another tool's ``.stdout``).  ``env`` is the tool's whole environment: nothing is
    inherited from the daemon's, which holds every target's ``password_env`` variable (build it
    with :mod:`pgwarden.pg.environment` or ``ConnSpec.tool_env``)."""
    if isinstance(argv, str | bytes) or not argv:
        raise TypeError("argv must be a non-empty list of strings, never a shell command line")
    args = [os.fspath(a) for a in argv]
    name = name or os.path.basename(args[0])
    try:
        proc = subprocess.Popen(
            parent_death_argv(args),  # SIGTERM when the daemon dies: .parentdeath
            stdin=stdin,
            stdout=stdout,
            stderr=PIPE,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
            bufsize=0,
        )
    except OSError as exc:
        raise ToolError(name, f"cannot start {args[0]}: {exc.strerror}") from exc
    carry_to_session(proc.pid)  # its own session's autogroup as nice as this thread: .priority
    if proc.stdout is not None:
        with contextlib.suppress(OSError):  # a bigger pipe means fewer wake-ups; optional
            fcntl.fcntl(proc.stdout.fileno(), fcntl.F_SETPIPE_SZ, CHUNK)
    return RunningTool(proc, name=name, log=log, timeout=timeout, cancel=cancel)


def _pump(source: Readable, sink: Sink) -> None:
    write = sink if callable(sink) else sink.write
    while chunk := source.read(CHUNK):
        write(chunk)


class _Feeder(threading.Thread):
    """Copies a file object into a tool's stdin, then closes it (EOF for the tool)."""

    def __init__(self, source: Readable, tool: RunningTool) -> None:
        super().__init__(name=f"{tool.name}-stdin-{tool.pid}", daemon=True)
        self.source = source
        self.tool = tool
        self.error: Exception | None = None

    def run(self) -> None:
        pipe = self.tool.stdin
        assert pipe is not None
        try:
            while chunk := self.source.read(CHUNK):
                view = memoryview(chunk)
                while view:
                    written = pipe.write(view)
                    view = view[written or 0 :]
        except BrokenPipeError:
            pass  # the tool exited before reading everything; its exit status tells why
        except Exception as exc:  # noqa: BLE001 - thread boundary; run_tool raises it
            # reading the source failed (EOFError of a truncated .gz...): the tool must not
            # take a short input for the whole of it
            self.error = exc
            self.tool.terminate_group()
        finally:
            with contextlib.suppress(OSError):
                pipe.close()


def run_tool(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    stdout: Sink | None = None,
    stdin: Readable | None = None,
    timeout: float | None = None,
    cancel: threading.Event | None = None,
    name: str | None = None,
    log: AnyLogger | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> ToolResult:
    """Run a tool to completion; ``stdout`` (a writable binary file or a callback taking each
    chunk) receives its output, ``None`` discards it; ``stdin`` (a readable binary file, read in
    chunks by a thread) feeds it, ``None`` gives it /dev/null.

    An exception raised by the sink terminates the tool and propagates.  The result is returned
    whatever the exit status: pass it to :func:`check` to raise on failure.
    """
    tool = start_tool(
        argv,
        env=env,
        name=name,
        log=log,
        stdin=PIPE if stdin is not None else DEVNULL,
        stdout=PIPE if stdout is not None else DEVNULL,
        timeout=timeout,
        cancel=cancel,
        cwd=cwd,
    )
    with tool:
        feeder = _Feeder(stdin, tool) if stdin is not None else None
        if feeder is not None:
            feeder.start()
        if stdout is not None:
            assert tool.stdout is not None
            _pump(tool.stdout, stdout)
        result = tool.wait()
        if feeder is not None:
            feeder.join()
            if feeder.error is not None:
                message = f"reading its input failed: {feeder.error}"
                raise ToolError(tool.name, message) from feeder.error
    return result


def run_pipeline(
    producer: Sequence[str],
    consumer: Sequence[str],
    *,
    env: Mapping[str, str],
    stdout: Sink | None = None,
    timeout: float | None = None,
    cancel: threading.Event | None = None,
    names: tuple[str, str] | None = None,
    log: AnyLogger | None = None,
) -> tuple[ToolResult, ToolResult]:
    """Run ``producer | consumer``; returns ``(producer_result, consumer_result)``.

    If the consumer fails, the producer is terminated (it would otherwise block on a full pipe
    or die of SIGPIPE); check the consumer's result first, it holds the cause.
    """
    first_name, second_name = names or (
        os.path.basename(producer[0]),
        os.path.basename(consumer[0]),
    )
    first = start_tool(producer, env=env, name=first_name, log=log, timeout=timeout, cancel=cancel)
    with first:
        assert first.stdout is not None
        second = start_tool(
            consumer,
            env=env,
            name=second_name,
            log=log,
            stdin=first.stdout,
            stdout=PIPE if stdout is not None else DEVNULL,
            timeout=timeout,
            cancel=cancel,
        )
        first.stdout.close()  # only the consumer holds the read end now
        first.stdout = None
        with second:
            if stdout is not None:
                assert second.stdout is not None
                _pump(second.stdout, stdout)
            second_result = second.wait()
        if not second_result.ok and first.running:
            first.terminate_group()
        first_result = first.wait()
    return first_result, second_result
