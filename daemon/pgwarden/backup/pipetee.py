"""Reading a tool's output pipe while a second reader gets every byte too, without copying.

A backup's stream is read by pgwarden (to compress and hash it) *and* by ``pg_restore
--file=/dev/null`` (to prove the archive whole, see :mod:`pgwarden.backup.readback`).  Copying
each byte from Python into a second pipe costs as much CPU as the parse itself on a small VM.
Linux's ``tee(2)`` duplicates what is waiting in one pipe into another by reference; pgwarden
then reads the original as usual.  Where ``tee`` is unavailable (not Linux, or the source is
not a pipe) :class:`PipeReader` falls back to writing each chunk to the second pipe itself.

Chunks are views of one reused buffer (fresh memory is slow to fault in on small VMs): each is
valid until the next one is asked for, which is how every stage after this one uses them.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
from collections.abc import Callable, Iterator
from typing import IO

READ_CHUNK = 1 << 20


def _load_tee() -> Callable[[int, int, int, int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.tee
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint]
    function.restype = ctypes.c_ssize_t
    return function


_TEE = _load_tee()


def tee(source: int, sink: int, length: int) -> int:
    """``tee(2)``: duplicate up to ``length`` bytes waiting in pipe ``source`` into pipe
    ``sink``; blocks until ``source`` has data; 0 at the end of ``source``."""
    if _TEE is None:
        raise OSError(errno.ENOSYS, "tee(2) is not available")
    while True:
        count = int(_TEE(source, sink, length, 0))  # ctypes releases the GIL while it blocks
        if count >= 0:
            return count
        code = ctypes.get_errno()
        if code != errno.EINTR:  # a signal for the daemon landed on this thread: go on
            raise OSError(code, os.strerror(code))


class PipeReader:
    """Chunks of ``source``, each also delivered to the pipe ``sink`` (a tool's stdin).

    When the sink's reader goes away (``EPIPE``), the rest of the stream is still read and
    returned; the caller learns why from that tool's exit status."""

    def __init__(self, source: IO[bytes], sink: IO[bytes] | None, size: int = READ_CHUNK) -> None:
        # read with os.readv on the descriptor: ``source`` must be unbuffered (a tool's pipe)
        self._fd = source.fileno()
        self._sink = sink
        self._sink_fd = sink.fileno() if sink is not None else -1
        self._sink_open = sink is not None
        self._buffer = bytearray(size)
        self._use_tee = _TEE is not None

    def chunks(self) -> Iterator[memoryview]:
        view = memoryview(self._buffer)
        size = len(self._buffer)
        while True:
            filled = 0
            while filled < size:
                got = self._next(view[filled:])
                if not got:
                    break
                filled += got
            if not filled:
                return
            yield view[:filled]
            if filled < size:
                return

    def _next(self, into: memoryview) -> int:
        """Read once into ``into`` (after duplicating the same bytes into the sink)."""
        if self._sink_open and self._use_tee:
            try:
                count = tee(self._fd, self._sink_fd, len(into))
            except OSError as exc:
                if exc.errno == errno.EPIPE:
                    self._sink_open = False
                elif exc.errno in (errno.EINVAL, errno.ENOSYS):
                    self._use_tee = False  # not a pipe: copy below
                else:
                    raise
            else:
                return self._read_exactly(into[:count]) if count else 0
        got = os.readv(self._fd, [into])
        if got and self._sink_open:
            self._copy_to_sink(into[:got])
        return got

    def _read_exactly(self, into: memoryview) -> int:
        # tee left these bytes in the source: reading them back never blocks
        done = 0
        while done < len(into):
            got = os.readv(self._fd, [into[done:]])
            if not got:
                break
            done += got
        return done

    def _copy_to_sink(self, data: memoryview) -> None:
        try:
            while data:
                data = data[os.write(self._sink_fd, data) :]
        except BrokenPipeError:
            self._sink_open = False

    def close_sink(self) -> None:
        """End of stream for the sink's reader."""
        self._sink_open = False
        if self._sink is not None:
            with contextlib.suppress(OSError):
                self._sink.close()
