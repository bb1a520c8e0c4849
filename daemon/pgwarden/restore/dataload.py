"""A drill's data section: stock ``pg_restore --section=data --file=-`` reading the archive,
its script loaded over several connections by :mod:`pgwarden.restore.copyload`.

``pg_restore`` reads the spool or the artifact in place, or -- a streamed ``.dump.zst`` -- its
stdin, fed on a thread of its own from the in-process decompression.  The run is watched for
stalls like any restore tool's (bytes of script loaded are progress; the loader's sessions
carry the run's ``application_name``).  A decompression that fails (a damaged artifact)
is raised once the tool has stopped; so is a stall.
"""

from __future__ import annotations

import contextlib
import fcntl
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

from pgwarden.archive.manifest import Manifest
from pgwarden.pg import pipes, process, stallwatch
from pgwarden.pg.conninfo import ConnSpec
from pgwarden.pg.stallwatch import StallWatch
from pgwarden.pg.tooltypes import AnyLogger
from pgwarden.restore import copyload, staging
from pgwarden.restore.outcome import STALLED, StepError


@dataclass(frozen=True)
class DataLoad:
    """One drill's data section: what to run, where to load, what to watch."""

    argv: list[str]
    env: dict[str, str]
    spec: ConnSpec
    jobs: int
    manifest: Manifest
    artifact: Path
    #: ``None``: ``pg_restore`` reads its stdin, the artifact decompressed
    source: Path | None
    cancel: threading.Event | None
    stall_timeout: float | None


@dataclass(frozen=True)
class DataLoaded:
    tool: process.ToolResult
    loaded: copyload.Loaded


#: reads of the script are handed on once this many bytes arrived: a pipe read returns what
#: is there (up to the pipe's 1 MiB, :mod:`pgwarden.pg.pipes`), and each piece's part costs
#: the loader a call into psycopg
COALESCE_BYTES = 1 << 20


def _reads(fd: int) -> Iterator[bytes]:
    pending: list[bytes] = []
    size = 0
    for data in pipes.reads(fd, process.CHUNK):
        pending.append(data)
        size += len(data)
        if size >= COALESCE_BYTES:
            yield pending[0] if len(pending) == 1 else b"".join(pending)
            pending, size = [], 0
    if pending:
        yield b"".join(pending)


#: the pipe into a streamed restore tool: 1 MiB (Linux's default limit for a user) instead of
#: 64 KiB, 16 times fewer wake-ups of the tool and of the feeding thread on a busy machine
PIPE_BYTES = 1 << 20


def feed(
    tool: process.RunningTool, chunks: Iterator[bytes], watch: StallWatch | None = None
) -> None:
    """Write ``chunks`` (the decompressed archive) into the tool's stdin, then close both: a
    tool that stopped reading ends the feed quietly (its exit status says why), and the
    artifact is closed at once (also for :mod:`.pgrestore`'s streamed runs)."""
    assert tool.stdin is not None
    with contextlib.suppress(OSError, AttributeError):  # not Linux, or a lower limit: as it is
        fcntl.fcntl(tool.stdin.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    try:
        for chunk in chunks:
            pipes.write_all(tool.stdin.fileno(), chunk)
            if watch is not None:
                watch.moved(len(chunk))
    except BrokenPipeError:
        pass
    finally:
        with contextlib.suppress(BrokenPipeError, OSError):
            tool.stdin.close()
        if isinstance(chunks, Generator):
            chunks.close()


class _Feeder:
    """The decompressed artifact into the tool's stdin, on a thread; what went wrong, kept."""

    def __init__(
        self, tool: process.RunningTool, load: DataLoad, cancel: threading.Event | None
    ) -> None:
        self._tool, self._load, self._cancel = tool, load, cancel
        self.failure: StepError | None = None
        self._thread = threading.Thread(target=self._run, name="drill-feed", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        load = self._load
        try:
            feed(self._tool, staging.decompressed(load.manifest, load.artifact, self._cancel))
        except StepError as exc:
            self.failure = exc
            self._tool.terminate_group()

    def join(self) -> None:
        self._thread.join()


def load_data(load: DataLoad, lines: Callable[[str], None], log: AnyLogger) -> DataLoaded:
    """Run the data section; ``lines`` takes the loader's error lines, ``log`` the tool's."""
    tag = stallwatch.session_tag("restore")
    with (
        stallwatch.watching(
            load.stall_timeout,
            doing="restoring (data)",
            upstream=load.cancel,
            spec=load.spec,
            tag=tag,
        ) as watch,
        process.start_tool(
            load.argv,
            env=load.env,
            name="pg_restore",
            log=log,
            cancel=watch.cancel,
            stdin=process.PIPE if load.source is None else process.DEVNULL,
            stdout=process.PIPE,
        ) as tool,
    ):
        feeder = _Feeder(tool, load, watch.cancel) if load.source is None else None
        assert tool.stdout is not None
        loaded = copyload.load(
            _reads(tool.stdout.fileno()),
            load.spec,
            load.jobs,
            tag=tag,
            error_sink=lines,
            moved=watch.moved,
            cancel=watch.cancel,
        )
        if not loaded.complete:  # the tool may be blocked on its stdout
            tool.terminate_group()
        result = tool.wait()
        if feeder is not None:
            feeder.join()
    if watch.stalled:
        raise StepError(STALLED, watch.stalled.removeprefix(f"{STALLED}: "))
    if feeder is not None and feeder.failure is not None:
        raise feeder.failure
    return DataLoaded(result, loaded)
