"""Moving bulk bytes through a tool's pipe without a wake-up for every page.

``pg_dump`` and ``pg_restore`` write their output and read their input through stdio, 4 KiB
per system call on a pipe.  A reader blocked on the pipe is woken by each of those writes, and
a writer blocked on a full pipe by each of those reads: about 220,000 context switches per GB
on each side, for a pipe that could carry 1 MiB at a time.  Measured here on the drill's
0.9 GB data script (``pg_restore --section=data --file=-`` read by one process), the tool and
its reader spent 2.3-2.6 CPU-seconds on it; reading as below, 1.2-1.3.

So the bulk paths let the pipe fill instead of racing the tool page by page:

* :func:`read_into` / :func:`reads`: a read that returned less than :data:`FULL_ENOUGH` is
  followed by a nap of :data:`NAP_S` before the next one, so the tool's writes meanwhile land
  in the pipe with nobody to wake.  The pipe (1 MiB, ``process.start_tool``) does not fill in
  that time at the rates a restore or a dump reaches, so the tool never waits for the nap; a
  fast tool fills it and is read at once, without naps.
* :func:`write_all`: writes what the pipe takes without blocking and naps while it is full,
  instead of sleeping in the kernel to be woken by each 4 KiB the tool reads.  A tool that
  reads more than 1 MiB per nap (1 GB/s) would wait; no restore reads that fast.

Only bulk data goes this way; output a person or a check waits for line by line does not.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

#: a read that returned less than this lets the pipe fill before the next one
FULL_ENOUGH = 256 << 10
#: how long: at most ~1 ms added to the end of a stream, and a 1 MiB pipe holds that long
NAP_S = 0.001


def read_into(fd: int, view: memoryview) -> int:
    """Fill ``view`` from ``fd``; the bytes read, fewer than ``len(view)`` only at the end of
    the stream."""
    filled = 0
    while filled < len(view):
        got = os.readv(fd, [view[filled:]])
        if not got:
            break
        filled += got
        if got < FULL_ENOUGH and filled < len(view):
            time.sleep(NAP_S)
    return filled


def reads(fd: int, size: int) -> Iterator[bytes]:
    """``fd`` to its end, in pieces of up to ``size`` bytes (fresh ``bytes`` each)."""
    while data := os.read(fd, size):
        yield data
        if len(data) < FULL_ENOUGH:
            time.sleep(NAP_S)


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write all of ``data`` to the pipe ``fd``, napping while it is full; ``fd`` is made
    non-blocking for the call.  A reader gone raises ``BrokenPipeError``, as a plain write."""
    view = memoryview(data)
    blocking = os.get_blocking(fd)
    os.set_blocking(fd, False)
    try:
        while view:
            with contextlib.suppress(BlockingIOError):  # full: nap, then what it takes
                view = view[os.write(fd, view) :]
            if view:
                time.sleep(NAP_S)
    finally:
        os.set_blocking(fd, blocking)
