"""The local storage's write path: a stream of chunks into an open file, hashed as it goes,
with the kernel writing it out while the dump still runs.

Without help, the kernel keeps a backup's pages dirty until the final ``fsync`` (the dirty
thresholds are a share of RAM, often more than a whole backup), so that ``fsync`` writes the
whole file at the end of the run, on its critical path.  :class:`EarlyWriteback` asks the
kernel to start writing each :data:`WRITEBACK_STEP` bytes as soon as they are written
(``sync_file_range(SYNC_FILE_RANGE_WRITE)``: it starts the I/O and does not wait for it), so
that the final ``fsync`` -- which is still made, and still decides durability -- finds little
left to do.  Where ``sync_file_range`` is missing (not Linux) the writes are unchanged.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
from collections.abc import Callable, Iterable

#: bytes written between two requests to start writing back what came before
WRITEBACK_STEP = 16 << 20
_SYNC_FILE_RANGE_WRITE = 2


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_SYNC_FILE_RANGE = _load_sync_file_range()


class EarlyWriteback:
    """Starts the write-out of a file's bytes ``WRITEBACK_STEP`` at a time, as they come."""

    def __init__(self, fd: int, step: int = WRITEBACK_STEP) -> None:
        self._fd = fd
        self._step = step
        #: bytes from the start of the file whose write-out was asked for
        self.started = 0
        self._usable = _SYNC_FILE_RANGE is not None

    def written(self, size: int) -> None:
        """``size`` bytes of the file are written: start writing out whole steps of them."""
        if not self._usable or size - self.started < self._step:
            return
        end = size - size % self._step
        assert _SYNC_FILE_RANGE is not None
        if _SYNC_FILE_RANGE(self._fd, self.started, end - self.started, _SYNC_FILE_RANGE_WRITE):
            self._usable = False  # a file system that cannot: the final fsync does it all
            return
        self.started = end


class HashedWriter:
    """Writes chunks to ``fd`` (appending), hashing them; :attr:`size` counts what was written
    so far (for the error message of a write that failed half-way)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self.size = 0

    def write(self, chunks: Iterable[bytes | bytearray | memoryview]) -> str:
        """Write every chunk, then fsync; the SHA-256 (hex) of all of them."""
        digest = hashlib.sha256()
        writeback = EarlyWriteback(self._fd)
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                view = view[os.write(self._fd, view) :]
            digest.update(chunk)
            self.size += len(chunk)
            writeback.written(self.size)
        os.fsync(self._fd)
        return digest.hexdigest()
