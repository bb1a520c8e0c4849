"""zstd in frames (:mod:`pgwarden.archive.zstdframes`, ``compress.zstd_compress``): what pgwarden
writes is read by the stock ``zstd`` tool, and pgwarden reads every kind of zstd stream (its own
frames, one big frame, frames without a size, skippable frames) exactly as ``zstd -dc`` does,
in pieces of any size; damage and truncation are reported."""

from __future__ import annotations

import random
import subprocess
import threading
from pathlib import Path

import pytest
import zstandard

from pgwarden.archive import compress, zstdframes
from pgwarden.archive.zstdframes import FrameDecoder


def _data(size: int, seed: int = 1) -> bytes:
    """Compressible bytes, like a dump's COPY text."""
    rng = random.Random(seed)
    words = [bytes(rng.choice(b"abcdefghij0123456789") for _ in range(8)) for _ in range(500)]
    out = bytearray()
    while len(out) < size:
        out += b"\t".join(rng.choice(words) for _ in range(6)) + b"\n"
    return bytes(out[:size])


def _stock_zstd(path: Path) -> bytes:
    return subprocess.run(
        ["zstd", "-q", "-dc", str(path)], check=True, stdout=subprocess.PIPE
    ).stdout


def _decode(stream: bytes, sizes: tuple[int, ...] = (1 << 20,), seed: int = 0) -> bytes:
    rng = random.Random(seed)
    out = bytearray()
    with FrameDecoder() as decoder:
        i = 0
        while i < len(stream):
            size = rng.choice(sizes)
            for piece in decoder.feed(stream[i : i + size]):
                out += piece.data
            i += size
        for piece in decoder.finish():
            out += piece.data
        assert not decoder.inside_frame
    return bytes(out)


def _frame_sizes(stream: bytes) -> list[int | None]:
    """The content size each frame's header declares (``None``: not declared)."""
    sizes: list[int | None] = []
    offset = 0
    while offset < len(stream):
        params = zstandard.get_frame_parameters(stream[offset : offset + 18])
        sizes.append(
            None if params.content_size == zstandard.CONTENTSIZE_UNKNOWN else params.content_size
        )
        offset += len(_one_frame(stream[offset:]))
    return sizes


def _one_frame(stream: bytes) -> bytes:
    decoder = zstandard.ZstdDecompressor().decompressobj()
    decoder.decompress(stream)
    return stream[: len(stream) - len(decoder.unused_data)]


def test_pgwarden_writes_sized_frames_that_stock_zstd_reads(tmp_path: Path) -> None:
    data = _data(2 * zstdframes.FRAME_INPUT + 12345)
    # pg_dump's output arrives in pieces of any size
    pieces = [data[i : i + 70000] for i in range(0, len(data), 70000)]
    stream = b"".join(compress.zstd_compress(pieces, level=1))
    assert _frame_sizes(stream) == [zstdframes.FRAME_INPUT, zstdframes.FRAME_INPUT, 12345]
    path = tmp_path / "x.dump.zst"
    path.write_bytes(stream)
    assert _stock_zstd(path) == data
    assert b"".join(compress.zstd_decompress([stream])) == data


def test_an_empty_input_is_one_empty_frame(tmp_path: Path) -> None:
    stream = b"".join(compress.zstd_compress([], level=1))
    path = tmp_path / "empty.zst"
    path.write_bytes(stream)
    assert _stock_zstd(path) == b""
    assert _decode(stream) == b""


def test_every_kind_of_frame_is_read_as_stock_zstd_reads_it(tmp_path: Path) -> None:
    ours = b"".join(compress.zstd_compress([_data(3 << 20, seed=2)], level=1))
    streaming = zstandard.ZstdCompressor(level=3).compressobj()  # no size in its header
    unsized = streaming.compress(_data(1 << 20, seed=3)) + streaming.flush()
    # one big frame, as zstd itself writes a file: decompressed in pieces, not whole
    big = zstandard.ZstdCompressor(level=1).compress(_data(zstdframes.PARALLEL_LIMIT + 1, seed=4))
    skippable = (0x184D2A57).to_bytes(4, "little") + (6).to_bytes(4, "little") + b"pgward"
    stream = ours + unsized + skippable + big + ours
    assert _frame_sizes(ours + unsized)[-1] is None
    path = tmp_path / "mixed.zst"
    path.write_bytes(stream)
    expected = _stock_zstd(path)
    assert _decode(stream) == expected
    assert _decode(stream, sizes=(1, 3, 17, 4096, 1 << 16, 1 << 20), seed=7) == expected


def test_the_sink_gets_each_sized_frame_at_its_position() -> None:
    data = _data(5 << 20, seed=5)
    streaming = zstandard.ZstdCompressor(level=1).compressobj()
    unsized = streaming.compress(data[:100000]) + streaming.flush()
    ours = b"".join(compress.zstd_compress([data[100000:]], level=1))
    spool = bytearray(len(data))
    lock = threading.Lock()
    sunk: list[int] = []

    def sink(offset: int, chunk: bytes) -> None:
        with lock:
            spool[offset : offset + len(chunk)] = chunk
            sunk.append(offset)

    position = 0
    with FrameDecoder(workers=2, sink=sink) as decoder:
        for piece in [*decoder.feed(unsized + ours), *decoder.finish()]:
            if not piece.sunk:  # the consumer writes what no worker did
                spool[position : position + len(piece.data)] = piece.data
            position += len(piece.data)
    assert position == len(data)
    assert bytes(spool) == data
    assert sorted(sunk) == [100000]  # the unsized frame streamed through in order


def test_a_damaged_frame_and_garbage_between_frames_raise() -> None:
    stream = bytearray(b"".join(compress.zstd_compress([_data(1 << 20)], level=1)))
    stream[len(stream) // 2] ^= 0x40
    with pytest.raises(zstandard.ZstdError):
        _decode(bytes(stream))
    good = b"".join(compress.zstd_compress([_data(1000)], level=1))
    with pytest.raises(zstandard.ZstdError, match=f"not a zstd frame at byte {len(good)}"):
        _decode(good + b"garbage!" + good)


def test_a_stream_ending_inside_a_frame_is_truncated() -> None:
    stream = b"".join(compress.zstd_compress([_data(3 << 20)], level=1))
    with FrameDecoder() as decoder:
        list(decoder.feed(stream[:-10]))
        list(decoder.finish())
        assert decoder.inside_frame
    with pytest.raises(zstandard.ZstdError, match="truncated"):
        b"".join(compress.zstd_decompress([stream[:-10]]))


def test_closing_with_frames_in_flight_leaves_no_thread() -> None:
    stream = b"".join(compress.zstd_compress([_data(zstdframes.FRAME_INPUT * 3)], level=1))
    before = threading.active_count()
    with FrameDecoder(workers=2) as decoder:
        for _piece in decoder.feed(stream):
            break
    assert threading.active_count() == before


def test_one_big_input_keeps_at_most_twice_the_workers_frames_in_flight() -> None:
    frames = 12
    stream = b"".join(compress.zstd_compress([_data(zstdframes.FRAME_INPUT * frames)], level=1))
    in_flight: list[int] = []
    with FrameDecoder(workers=2) as decoder:
        pieces = decoder.feed(stream)  # the whole stream in one call
        for _piece in pieces:
            in_flight.append(len(decoder._pending))
        list(decoder.finish())
    assert max(in_flight) <= 4
    assert decoder.frames == frames
