"""zstd streams as frames: written in independent frames, read back on several cores.

A zstd file may hold any number of frames one after the other; stock ``zstd -d`` (and every
zstd reader) decompresses them as one stream.  pgwarden's zstd stage (``compress.zstd_compress``)
ends a frame after every :data:`FRAME_INPUT` bytes of pg_dump's output and writes each frame's
size into its header, so that a reader can cut the stream at frame boundaries by reading the
small block headers only (RFC 8878, section 3.1.1) and decompress several frames at once.

:class:`FrameDecoder` does that: frames whose header declares at most :data:`PARALLEL_LIMIT`
bytes are decompressed whole on worker threads (the zstd library releases the GIL); any other
frame -- one big frame, as older pgwarden versions and ``zstd`` itself write -- streams through
in small pieces on the caller's thread.  Output is handed on in stream order either way.
The output comes as :class:`Decoded` pieces; with a ``sink``, each worker also hands its frame's
output to it at once, with its position in the stream.  A damaged stream raises
``zstandard.ZstdError`` (each frame carries its own checksum);
:attr:`FrameDecoder.inside_frame` says whether the input stopped in the middle of a frame
(truncation at a frame boundary is caught by the artifact's SHA-256, as for any file).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import NamedTuple

import zstandard

#: pg_dump output per frame: level 1 keeps a window far smaller than this, so the frames cost
#: about 1% of size (``benchmarks/backup.py``), while 2 cores decompress twice as fast
FRAME_INPUT = 8 << 20
#: frames declaring a content size up to this are decompressed whole, in parallel
PARALLEL_LIMIT = 16 << 20
#: compressed input per call when a frame streams through (small outputs the allocator reuses)
STREAM_PIECE = 16 << 10

MAGIC = b"\x28\xb5\x2f\xfd"
_SKIPPABLE = 0x184D2A50  # the 16 magic numbers 0x184D2A5?: skippable frames
_FCS_BYTES = (0, 2, 4, 8)
_DICT_BYTES = (0, 1, 2, 4)
_BLOCK_RLE = 1
_BLOCK_RESERVED = 3


def decode_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


#: called on a worker with a whole frame's output and its position in the decompressed stream
FrameSink = Callable[[int, bytes], None]


class Decoded(NamedTuple):
    """Decompressed bytes, in stream order; ``sunk`` when the frame sink was given them."""

    data: bytes
    sunk: bool


def _decompress_frame(frame: bytes, offset: int, sink: FrameSink | None) -> Decoded:
    # one decompression context per call: a context must not be shared between threads
    data = zstandard.ZstdDecompressor().decompress(frame)
    if sink is not None:
        sink(offset, data)
    return Decoded(data, sink is not None)


class FrameDecoder:
    """Decompresses a zstd stream fed in order (:meth:`feed`, then :meth:`finish`), yielding
    the decompressed bytes in order; at most ``2 * workers`` frames are in flight.

    With ``sink``, each frame decompressed on a worker is also handed to ``sink(offset,
    data)`` right there (a spool file written at ``offset`` by several threads at once).
    """

    def __init__(self, workers: int | None = None, sink: FrameSink | None = None) -> None:
        self.workers = workers or decode_workers()
        self._sink = sink
        self._out = 0  # decompressed bytes of the frames cut or streamed so far
        self._frame_size = 0
        self._pool: ThreadPoolExecutor | None = None
        self._pending: deque[Future[Decoded]] = deque()
        self._buf = bytearray()
        self._consumed = 0  # stream position of self._buf[0]
        self._state = "header"
        self._cursor = 0  # in a sized frame: where the next block header starts
        self._frame_end: int | None = None
        self._checksum = False
        self._skip = 0
        self._stream: zstandard.ZstdDecompressionObj | None = None
        self.frames = 0

    @property
    def inside_frame(self) -> bool:
        """Whether the input so far stops in the middle of a frame."""
        return self._state != "header" or bool(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> Iterator[Decoded]:
        self._buf += data
        yield from self._advance()
        while self._pending and (self._pending[0].done() or len(self._pending) > 2 * self.workers):
            yield self._pending.popleft().result()

    def finish(self) -> Iterator[Decoded]:
        """The rest of the output, once all input was fed."""
        yield from self._advance()
        while self._pending:
            yield self._pending.popleft().result()

    def close(self) -> None:
        """Stop the workers (the frames in flight are abandoned)."""
        for future in self._pending:
            future.cancel()
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> FrameDecoder:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- the state machine --------------------------------------------------------------------

    def _advance(self) -> Iterator[Decoded]:
        while True:
            if self._state == "header":
                if not self._start_frame():
                    return
            elif self._state == "sized":
                if not self._cut_sized():
                    return
                while len(self._pending) > 2 * self.workers:  # one feed may hold many frames
                    yield self._pending.popleft().result()
            elif self._state == "skip":
                dropped = min(self._skip, len(self._buf))
                self._drop(dropped)
                self._skip -= dropped
                if self._skip:
                    return
                self._state = "header"
            else:  # "stream"
                yield from self._stream_through()
                if self._state == "stream":
                    return

    def _drop(self, count: int) -> None:
        del self._buf[:count]
        self._consumed += count

    def _damaged(self, why: str) -> zstandard.ZstdError:
        return zstandard.ZstdError(f"{why} at byte {self._consumed + self._cursor}")

    def _start_frame(self) -> bool:
        buf = self._buf
        if len(buf) < 4:
            return False
        magic = int.from_bytes(buf[:4], "little")
        if magic & 0xFFFFFFF0 == _SKIPPABLE:
            if len(buf) < 8:
                return False
            self._skip = int.from_bytes(buf[4:8], "little")
            self._drop(8)
            self._state = "skip"
            return True
        self._cursor = 0
        if bytes(buf[:4]) != MAGIC:
            raise self._damaged("not a zstd frame")
        if len(buf) < 5:
            return False
        descriptor = buf[4]
        single_segment = bool(descriptor & 0x20)
        fcs_flag = descriptor >> 6
        fcs_bytes = _FCS_BYTES[fcs_flag] or (1 if single_segment else 0)
        header = 5 + (0 if single_segment else 1) + _DICT_BYTES[descriptor & 3] + fcs_bytes
        if len(buf) < header:
            return False
        self.frames += 1
        if fcs_bytes:
            size = int.from_bytes(buf[header - fcs_bytes : header], "little")
            size += 256 if fcs_bytes == 2 else 0
            if size <= PARALLEL_LIMIT:
                self._state, self._cursor, self._frame_end = "sized", header, None
                self._frame_size = size
                self._checksum = bool(descriptor & 0x04)
                return True
        self._state = "stream"
        self._stream = zstandard.ZstdDecompressor().decompressobj()
        return True

    def _cut_sized(self) -> bool:
        """Walk the block headers of a sized frame; once it is all here, hand it to a worker."""
        buf = self._buf
        while self._frame_end is None:
            if len(buf) < self._cursor + 3:
                return False
            block = int.from_bytes(buf[self._cursor : self._cursor + 3], "little")
            kind = (block >> 1) & 3
            if kind == _BLOCK_RESERVED:
                raise self._damaged("a reserved zstd block type")
            self._cursor += 3 + (1 if kind == _BLOCK_RLE else block >> 3)
            if block & 1:  # the last block
                self._frame_end = self._cursor + (4 if self._checksum else 0)
        if len(buf) < self._frame_end:
            return False
        frame = bytes(buf[: self._frame_end])
        self._drop(self._frame_end)
        self._state, self._cursor, self._frame_end = "header", 0, None
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="zstd-frames")
        self._pending.append(self._pool.submit(_decompress_frame, frame, self._out, self._sink))
        self._out += self._frame_size
        return True

    def _stream_through(self) -> Iterator[Decoded]:
        """Decompress the current (unsized or big) frame in pieces, in order after the frames
        before it."""
        while self._pending:
            yield self._pending.popleft().result()
        stream = self._stream
        assert stream is not None
        view = memoryview(self._buf)
        used = 0
        try:
            while used < len(view) and not stream.eof:
                out = stream.decompress(view[used : used + STREAM_PIECE])
                used += min(STREAM_PIECE, len(view) - used)
                if out:
                    self._out += len(out)
                    yield Decoded(out, False)
        finally:
            view.release()
        if stream.eof:
            # the bytes after the frame: the last piece's unused part, and the pieces not fed
            rest = stream.unused_data + bytes(self._buf[used:])
            self._drop(len(self._buf))
            self._buf += rest
            self._consumed -= len(rest)
            self._state, self._stream = "header", None
        else:
            self._drop(used)
