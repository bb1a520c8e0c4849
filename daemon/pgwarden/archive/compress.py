"""Streaming compression stages between ``pg_dump`` and the storage.

Used when pg_dump cannot compress well itself: PostgreSQL 15's pg_dump and the embedded
PostgreSQL 18 build have no zstd, and pg_dump's gzip is single-threaded and slow (it is what
makes the strategy's ``pg_dump | gzip`` take minutes).  Measured by ``benchmarks/backup.py``:

* ``zstd``: the ``zstandard`` library, in-line (worker threads cost more CPU than they save
  on a 2-core server that also runs PostgreSQL and pg_dump); output is a sequence of standard
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
#: input fed to the zstd compressor per call.  Each call returns a new ``bytes``; small ones
#: come from memory the allocator reuses, while big ones are fresh pages, and on a small VM
#: faulting those in costs more than the compression (``benchmarks/backup.py``: -15% CPU)
COMPRESS_PIECE = 256 << 10
#: the same for decompression: compressed input per call (its output is about 5x bigger)
DECOMPRESS_PIECE = zstdframes.STREAM_PIECE
READ_CHUNK = 1 << 20


def worker_count() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def zstd_compress(chunks: Iterable[Chunk], level: int = 3) -> Iterator[bytes]:
    """Independent frames of ``FRAME_INPUT`` bytes of input, each with its content size and a
    content checksum in its header (decompression detects a damaged file by itself)."""
    compressor = zstandard.ZstdCompressor(
        level=level, threads=0, write_checksum=True, write_content_size=True
    )
    frame = bytearray(zstdframes.FRAME_INPUT)
    filled = 0
    frames = 0
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            take = min(len(view), len(frame) - filled)
            frame[filled : filled + take] = view[:take]
            filled += take
            view = view[take:]
            if filled == len(frame):
                yield from _zstd_frame(compressor, memoryview(frame))
                filled = 0
                frames += 1
    if filled or not frames:  # an empty input still gives a (valid, empty) zstd frame
        yield from _zstd_frame(compressor, memoryview(frame)[:filled])


def _zstd_frame(compressor: zstandard.ZstdCompressor, data: memoryview) -> Iterator[bytes]:
    stream = compressor.compressobj(size=len(data))
    for start in range(0, len(data), COMPRESS_PIECE):
        out = stream.compress(data[start : start + COMPRESS_PIECE])
        if out:
            yield out
    yield stream.flush()


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
