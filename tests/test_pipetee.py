"""pipetee: pg_dump's output read once, duplicated into a second pipe by tee(2)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from pgwarden.backup import pipetee
from tests.helpers import pipe_with


def _drained_pipe() -> tuple[int, bytearray, threading.Thread]:
    """A pipe whose read end a thread empties into the returned buffer; its write end."""
    sink_read, sink_write = os.pipe()
    copied = bytearray()

    def drain() -> None:
        with open(sink_read, "rb", buffering=0) as fh:
            while piece := fh.read(1 << 16):
                copied.extend(piece)

    drainer = threading.Thread(target=drain)
    drainer.start()
    return sink_write, copied, drainer


def test_every_byte_reaches_both_readers_through_tee() -> None:
    payload = os.urandom(3 << 20) + b"tail"
    source, writer = pipe_with(payload)
    sink_write, copied, drainer = _drained_pipe()
    with source, open(sink_write, "wb", buffering=0) as sink:
        reader = pipetee.PipeReader(source, sink, size=1 << 20)
        read = b"".join(bytes(chunk) for chunk in reader.chunks())
        assert reader._use_tee  # the zero-copy path, not the fallback
        reader.close_sink()
    drainer.join(30)
    writer.join(30)
    assert read == payload
    assert bytes(copied) == payload


def test_a_sink_that_goes_away_does_not_stop_the_read(tmp_path: Path) -> None:
    payload = os.urandom(2 << 20)
    source, writer = pipe_with(payload)
    sink_read, sink_write = os.pipe()
    os.close(sink_read)  # the second reader died (pg_restore failed early)
    with source, open(sink_write, "wb", buffering=0) as sink:
        reader = pipetee.PipeReader(source, sink)
        read = b"".join(bytes(chunk) for chunk in reader.chunks())
    writer.join(30)
    assert read == payload


def test_a_regular_file_is_copied_to_the_sink(tmp_path: Path) -> None:
    payload = os.urandom(1 << 20) * 2 + b"end"
    path = tmp_path / "source"
    path.write_bytes(payload)
    sink_write, copied, drainer = _drained_pipe()
    with path.open("rb", buffering=0) as source, open(sink_write, "wb", buffering=0) as sink:
        reader = pipetee.PipeReader(source, sink)
        read = b"".join(bytes(chunk) for chunk in reader.chunks())
        assert not reader._use_tee  # tee(2) needs a pipe: the fallback copies
        reader.close_sink()
    drainer.join(30)
    assert read == payload
    assert bytes(copied) == payload
