"""Bulk bytes through a pipe (:mod:`pgwarden.pg.pipes`): everything arrives, in order, from a
writer that trickles; a full pipe is waited for without blocking; a reader gone is an error."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from subprocess import PIPE

import pytest

from pgwarden.pg import pipes

#: reads its stdin 64 KiB at a time, slowly, and prints its SHA-256
SLOW_READER = """
import hashlib, sys, time
h = hashlib.sha256()
while piece := sys.stdin.buffer.read1(65536):
    h.update(piece)
    time.sleep(0.002)
print(h.hexdigest())
"""
DATA = hashlib.sha256(b"seed").digest() * 40_000  # 1.28 MB, not one repeated byte


def _trickle(fd: int, data: bytes, piece: int = 4096) -> threading.Thread:
    """Write ``data`` to ``fd`` 4 KiB at a time, as pg_dump's stdio does, then close it."""

    def run() -> None:
        with os.fdopen(fd, "wb", buffering=0) as out:
            for start in range(0, len(data), piece):
                out.write(data[start : start + piece])
                if start % (64 * piece) == 0:
                    time.sleep(0.001)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_read_into_fills_each_buffer_and_stops_short_only_at_the_end() -> None:
    read_end, write_end = os.pipe()
    writer = _trickle(write_end, DATA)
    view = memoryview(bytearray(1 << 20))
    got, sizes = b"", []
    while filled := pipes.read_into(read_end, view):
        got += bytes(view[:filled])
        sizes.append(filled)
    writer.join()
    os.close(read_end)
    assert got == DATA
    assert sizes == [1 << 20, len(DATA) - (1 << 20)]


def test_reads_hand_on_everything_in_order() -> None:
    read_end, write_end = os.pipe()
    writer = _trickle(write_end, DATA)
    pieces = list(pipes.reads(read_end, 1 << 20))
    writer.join()
    os.close(read_end)
    assert b"".join(pieces) == DATA
    assert all(len(p) <= 1 << 20 for p in pieces)


def test_write_all_waits_for_a_slow_reader_and_restores_blocking_mode() -> None:
    tool = subprocess.Popen([sys.executable, "-c", SLOW_READER], stdin=PIPE, stdout=PIPE)
    assert tool.stdin is not None and tool.stdout is not None
    fd = tool.stdin.fileno()
    pipes.write_all(fd, DATA)
    assert os.get_blocking(fd)
    out, _ = tool.communicate()  # closes stdin: the end of the stream
    assert out.decode().strip() == hashlib.sha256(DATA).hexdigest()
    assert tool.returncode == 0


def test_write_all_to_a_reader_that_is_gone_is_a_broken_pipe() -> None:
    tool = subprocess.Popen(["head", "-c", "10"], stdin=PIPE, stdout=subprocess.DEVNULL)
    assert tool.stdin is not None
    with pytest.raises(BrokenPipeError):
        pipes.write_all(tool.stdin.fileno(), DATA * 4)
    assert tool.wait() == 0
    tool.stdin.close()
