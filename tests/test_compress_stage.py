"""The zstd stage compresses a frame on a worker while the next is gathered: every frame holds
its own slice of the input, in order, and no thread is left behind when the stream stops early."""

from __future__ import annotations

import random
import threading

import zstandard

from pgwarden.archive import compress, zstdframes


def _data(size: int) -> bytes:
    rng = random.Random(19)
    words = [bytes(rng.choices(b"abcdefghij0123456789", k=rng.randint(3, 12))) for _ in range(500)]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words) + b" "
    return bytes(out[:size])


def test_each_frame_holds_its_slice_of_the_input_in_order() -> None:
    data = _data(3 * zstdframes.FRAME_INPUT + 777)
    pieces = [data[i : i + 100_003] for i in range(0, len(data), 100_003)]
    stream = b"".join(compress.zstd_compress(pieces, level=1))
    slices = []
    while stream:
        decoder = zstandard.ZstdDecompressor().decompressobj()
        slices.append(decoder.decompress(stream))
        stream = decoder.unused_data
    expected = [
        data[i : i + zstdframes.FRAME_INPUT] for i in range(0, len(data), zstdframes.FRAME_INPUT)
    ]
    assert slices == expected


def test_a_stream_stopped_early_leaves_no_thread() -> None:
    before = threading.active_count()
    stage = compress.zstd_compress([_data(3 * zstdframes.FRAME_INPUT)], level=1)
    assert next(stage)
    stage.close()  # the backup failed: the frame in flight is dropped
    assert threading.active_count() == before
