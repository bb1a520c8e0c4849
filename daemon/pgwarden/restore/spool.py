"""The spool file of a restore: a decompressed ``.dump.zst`` written beside the storage.

:class:`SpoolWriter` takes the archive's decompressed bytes in order (:meth:`SpoolWriter.put`)
on a thread of its own, where it writes them, feeds them to the data-offset search
(:class:`pgwarden.archive.customtoc.OffsetFinder`) and keeps :func:`spool_floor` bytes free on
the file system.  Whole zstd frames decompressed on worker threads are written there at once,
at their position (:meth:`SpoolWriter.write_at`); they are then put only for the offset
search, which needs the bytes in order.
"""

from __future__ import annotations

import os
import queue
import threading
from pathlib import Path

from pgwarden.archive import customtoc

SPOOL_SUFFIX = ".partial"
_SPACE_CHECK_EVERY = 64 << 20
#: decompressed bytes waiting for the writer thread (zstd frames arrive 8 MiB at a time)
_QUEUE_BYTES = 32 << 20
#: bytes per write(2): one call of several MiB often took 5-10x as long per byte here
#: (the kernel throttles a writer of dirty pages in bigger steps)
_WRITE_PIECE = 256 << 10


def spool_floor(path: Path) -> int:
    """Free bytes a spool file must leave on its file system: 5% of it, at least 1 GiB."""
    info = os.statvfs(path)
    return max(1 << 30, info.f_blocks * info.f_frsize // 20)


def _free(path: Path) -> int:
    info = os.statvfs(path)
    return info.f_bavail * info.f_frsize


def write_fully(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view[:_WRITE_PIECE], offset)
        view = view[written:]
        offset += written


class SpoolWriter:
    """Writes the spool file ``fd`` in ``directory`` (see the module docstring)."""

    def __init__(self, fd: int, directory: Path, offsets: customtoc.OffsetFinder | None) -> None:
        self.fd = fd
        self.floor = spool_floor(directory)
        self.short_of_space = _free(directory) < self.floor  # then every _SPACE_CHECK_EVERY
        self._directory = directory
        self._offsets = offsets
        self._position = 0  # of the next byte put
        self._since_check = 0
        self._error: OSError | None = None
        self._abandoned = False
        self._queue: queue.Queue[tuple[bytes, bool] | None] = queue.Queue()
        self._queued = 0  # bytes put and not yet handled: at most _QUEUE_BYTES (+ one chunk)
        self._room = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="drill-spool", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            out, written = item
            try:
                if self._error is not None or self.short_of_space or self._abandoned:
                    continue  # drain: the reader learns of it on its next put()
                self._take(out, written)
            except OSError as exc:
                self._error = exc
            finally:
                with self._room:
                    self._queued -= len(out)
                    self._room.notify()

    def _take(self, out: bytes, written: bool) -> None:
        if not written:
            write_fully(self.fd, out, self._position)
        self._position += len(out)
        if self._offsets is not None:
            self._offsets.feed(out)
        self._since_check += len(out)
        if self._since_check >= _SPACE_CHECK_EVERY:
            self._since_check = 0
            self.short_of_space = _free(self._directory) < self.floor

    def write_at(self, offset: int, data: bytes) -> None:
        """Write ``data`` at ``offset`` now, on the calling thread; it is still :meth:`put`
        (``written=True``) in its turn."""
        if not (self._abandoned or self.short_of_space):
            write_fully(self.fd, data, offset)

    def put(self, out: bytes, *, written: bool = False) -> None:
        """The next decompressed bytes, in order (``written``: by :meth:`write_at` already)."""
        if self._error is not None:
            raise self._error
        with self._room:
            while self._queued > _QUEUE_BYTES and self._thread.is_alive():
                self._room.wait()
            self._queued += len(out)
        self._queue.put((out, written))

    def finish(self) -> None:
        """Wait until everything put is written; raise a write error."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        if self._thread.is_alive():
            self._abandoned = True
            self._queue.put(None)
            self._thread.join()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
