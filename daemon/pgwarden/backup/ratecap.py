"""The read-rate cap of a streamed dump (``[targets.backup] max_rate``): :class:`RateCap`.

pgwarden reads pg_dump's stdout at most ``rate`` bytes per second: when it reads less eagerly,
pg_dump blocks on its full pipe and the server backend serving it blocks on its socket, so
the whole dump -- pg_dump, the backend (which pgwarden cannot renice), compression, writing --
is spread out over a longer time instead of taking the machine in one go.

A pacer, not a bucket of saved-up credit: after each chunk the reader is due ``len / rate``
seconds later; time lost while pg_dump itself was slower is not made up with a burst (a
chunk's worth at most).  It waits in steps of :data:`STEP_S` on the run's cancel event: a
cancel or a stall cancel ends the wait and the reading (:class:`~pgwarden.errors.BackupError`,
which the dump turns into its stall error when the watch fired), and it tells the stall watch that the run is
alive while it waits: the cap holding bytes back is not a stall (a dump that is really stuck
makes the reader wait on the pipe, not here, and the watch sees no bytes).
"""

from __future__ import annotations

import threading
import time

from pgwarden.errors import BackupError
from pgwarden.pg.stallwatch import StallWatch

#: the longest single wait, seconds (a cancel is seen within it)
STEP_S = 0.1
#: reads per second aimed at when capped: small reads keep pg_dump's bursts short
READS_PER_S = 20
MIN_READ = 64 * 1024
MAX_READ = 1 << 20


class RateCap:
    """Paces a reader to ``rate`` bytes per second (module docstring)."""

    def __init__(self, rate: int, watch: StallWatch) -> None:
        self.rate = rate
        self.waited_s = 0.0
        self._watch = watch
        self._cancel: threading.Event | None = watch.cancel
        self._due: float | None = None

    @property
    def read_size(self) -> int:
        """Bytes to read from the pipe at a time: about :data:`READS_PER_S` reads a second."""
        return max(MIN_READ, min(MAX_READ, self.rate // READS_PER_S))

    def consumed(self, count: int) -> None:
        """``count`` bytes were read: wait until the cap allows the next read."""
        began = time.monotonic()
        start = began if self._due is None else max(self._due, began - count / self.rate)
        self._due = start + count / self.rate
        try:
            while (left := self._due - time.monotonic()) > 0:
                step = min(left, STEP_S)
                if self._cancel is None:
                    time.sleep(step)
                elif self._cancel.wait(step):
                    # cancelled (or stalled): read no more, or the rest of the dump would be
                    # drained at full speed, and could end whole, before pg_dump is stopped
                    raise BackupError("backup cancelled")
                self._watch.moved(1)  # held back by the cap, not stuck
        finally:
            self.waited_s += time.monotonic() - began
