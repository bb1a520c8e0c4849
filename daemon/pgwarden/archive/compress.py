"""Streaming compression stages between ``pg_dump`` and the storage.

Used when pg_dump cannot compress well itself: PostgreSQL 15's pg_dump and the embedded
PostgreSQL 18 build have no zstd, and pg_dump's gzip is single-threaded and slow (it is what
makes the strategy's ``pg_dump | gzip`` take minutes).  Measured by ``benchmarks/backup.py``:

* ``zstd``: the ``zstandard`` library, one frame at a time on one worker thread while the
  caller gathers the next (zstd's own worker threads cost more CPU than they save on a 2-core
  server that also runs PostgreSQL and pg_dump; one frame in flight costs none and keeps
  pg_dump's pipe read while a frame is compressed); output is a sequence of standard
  zstd frames of :data:`zstdframes.FRAME_INPUT` bytes of input each, sized in their headers, so
  that a restore decompresses them on several cores (:mod:`pgwarden.archive.zstdframes`);
  ``zstd -dc x.dump.zst | pg_restore ...`` works with stock tools;
* ``gzip``: blocks compressed in parallel on every core, each a complete gzip member, concatenated in order —
  a valid ``.gz`` file (RFC 1952 allows several members) that ``gunzip -c`` reads as one stream.

Decompression readers for readback checks and restores live here too.
"""

from __future__ import annotations

import os
import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO

import zstandard

from pgwarden.archive import zstdframes

#: what the stages pass along: pg_dump's output arrives as views of one reused buffer
Chunk = bytes | bytearray | memoryview

GZIP_BLOCK = 8 << 20
#: compressed input per decompression call (its output is about 5x bigger): small outputs come
#: from memory the allocator reuses
DECOMPRESS_PIECE = zstdframes.STREAM_PIECE
READ_CHUNK = 1 << 20


def worker_count() -> int:
    return max(1, min(8, os.cpu_count() or 1))


#: the shortest match zstd looks for at level 1 (its own default there is 7): pg_dump's text
#: holds many short repeats (digits of floats, JSON keys), and at 6 the output is 5% smaller
#: (below the strategy's gzip -6 on the app shape, 252 -> 238 MB) for 10% more compression CPU
LEVEL1_MIN_MATCH = 6


def zstd_parameters(level: int) -> zstandard.ZstdCompressionParameters:
    """zstd's parameters for ``level`` on frames of ``FRAME_INPUT`` bytes, with a content
    size and checksum in each frame header, single-threaded; level 1 with
    :data:`LEVEL1_MIN_MATCH`."""
    tuned = {"min_match": LEVEL1_MIN_MATCH} if level == 1 else {}
    return zstandard.ZstdCompressionParameters.from_level(
        level,
        source_size=zstdframes.FRAME_INPUT,
        write_checksum=1,
        write_content_size=1,
        threads=0,
        **tuned,
    )


def zstd_compress(chunks: Iterable[Chunk], level: int = 3) -> Iterator[bytes]:
    """Independent frames of ``FRAME_INPUT`` bytes of input, each with its content size and a
    content checksum in its header (decompression detects a damaged file by itself).

    A frame is compressed on a worker thread while the caller gathers the next one (two frame
    buffers, one frame in flight): reading pg_dump's pipe does not stop for the ~20 ms a frame
    takes, so pg_dump and its server backend keep running meanwhile.  The output is the same
    bytes, in the same order, as compressing in-line.

    The two buffers grow as their first frame is gathered, then are reused in place: a small
    dump touches only the memory it fills, and nothing zeroes 16 MB up front (that took ~13 ms
    holding the GIL, a pause of every other thread -- a ``/metrics`` scrape's included -- at
    each backup's start)."""
    compressor = zstandard.ZstdCompressor(compression_params=zstd_parameters(level))
    size = zstdframes.FRAME_INPUT
    buffers = (bytearray(), bytearray())
    current = 0  # the buffer being filled
    filled = 0
    # the frame being compressed; cancelled (or finished) when the caller stops early
    in_flight: Future[bytes] | None = None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="zstd") as pool:
        try:
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    frame = buffers[current]
                    take = min(len(view), size - filled)
                    # in place once the buffer is full-sized, appended while it grows
                    frame[filled : filled + take] = view[:take]
                    filled += take
                    view = view[take:]
                    if filled == size:
                        # the frame before is done with its buffer, which is filled next
                        done = in_flight.result() if in_flight is not None else None
                        in_flight = pool.submit(_zstd_frame, compressor, memoryview(frame))
                        current, filled = 1 - current, 0
                        if done is not None:
                            yield done
            if in_flight is not None:
                yield in_flight.result()
            # the last, shorter frame; an empty input still gives a (valid, empty) zstd frame
            if filled or in_flight is None:
                yield _zstd_frame(compressor, memoryview(buffers[current])[:filled])
            in_flight = None
        finally:
            if in_flight is not None:
                in_flight.cancel()


def _zstd_frame(compressor: zstandard.ZstdCompressor, data: memoryview) -> bytes:
    """One frame, compressed in one call (its size goes into the header).  Streaming it in
    pieces instead cost 15% more CPU (``compressobj`` copies its input into its own window);
    the one output buffer per frame is memory the allocator hands back frame after frame."""
    return compressor.compress(data)


def _gzip_member(block: bytes, level: int) -> bytes:
    compressor = zlib.compressobj(level, zlib.DEFLATED, 31)  # wbits 31: gzip header + trailer
    return compressor.compress(block) + compressor.flush()


def _blocks(chunks: Iterable[Chunk], size: int) -> Iterator[bytes]:
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)


def gzip_compress(chunks: Iterable[Chunk], level: int = 6) -> Iterator[bytes]:
    """Parallel gzip: blocks compressed on worker threads (zlib releases the GIL)."""
    workers = worker_count()
    if workers == 1:
        for block in _blocks(chunks, GZIP_BLOCK):
            yield _gzip_member(block, level)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gzip") as pool:
        pending: deque[Future[bytes]] = deque()
        for block in _blocks(chunks, GZIP_BLOCK):
            pending.append(pool.submit(_gzip_member, block, level))
            while len(pending) > workers * 2:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def passthrough(chunks: Iterable[Chunk]) -> Iterator[Chunk]:
    yield from chunks


def read_chunks(stream: IO[bytes], size: int = READ_CHUNK) -> Iterator[bytes]:
    """Chunks of ``size`` bytes (the last may be shorter).  A pipe answers with whatever is
    there, often a few KiB: gathering whole chunks keeps the per-chunk cost of every stage
    after this one (compression, hashing, the parse, the write) off the hot path."""
    buffer = bytearray()
    while piece := stream.read(size - len(buffer)):
        buffer += piece
        if len(buffer) >= size:
            yield bytes(buffer)
            buffer.clear()
    if buffer:
        yield bytes(buffer)


def zstd_decompress(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Decompress a zstd stream of any number of frames, several at once when their headers
    say how big they are; raises ``zstandard.ZstdError`` when damaged or truncated."""
    with zstdframes.FrameDecoder() as decoder:
        for chunk in chunks:
            for piece in decoder.feed(chunk):
                yield piece.data
        for piece in decoder.finish():
            yield piece.data
        if decoder.inside_frame:
            raise zstandard.ZstdError("the zstd stream is truncated")


class GzipMembers:
    """Incremental decompression of a multi-member gzip stream (pgwarden's parallel gzip)."""

    def __init__(self) -> None:
        self._d = zlib.decompressobj(31)
        #: whether the input so far stops in the middle of a member
        self.inside_frame = False

    def pieces(self, chunk: bytes) -> Iterator[bytes]:
        """The output of ``chunk``, decompressed ``DECOMPRESS_PIECE`` bytes of input at a time:
        small inputs give small outputs, which the allocator reuses (a big fresh buffer per
        call costs a page fault per 4 KiB, more than the decompression itself)."""
        view = memoryview(chunk)
        for start in range(0, len(view), DECOMPRESS_PIECE):
            out = self._decompress(view[start : start + DECOMPRESS_PIECE])
            if out:
                yield out

    def _decompress(self, data: bytes | memoryview) -> bytes:
        out = bytearray()
        while data:
            self.inside_frame = True
            out += self._d.decompress(data)
            if self._d.eof:
                data = self._d.unused_data
                self._d = zlib.decompressobj(31)
                self.inside_frame = False
            else:
                data = b""
        return bytes(out)


def gzip_decompress(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Decompress a (multi-member) gzip stream; raises ``zlib.error`` when damaged/truncated."""
    members = GzipMembers()
    for chunk in chunks:
        yield from members.pieces(chunk)
    if members.inside_frame:
        raise zlib.error("the gzip stream is truncated")
