"""The drill's read of an artifact (:mod:`pgwarden.restore.staging`): read and hashed on a
thread of its own, handed on in order; a reader that stops early leaves no thread behind, and
a read error reaches the reader."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from pgwarden.restore.staging import _HashingReader


def test_chunks_come_in_order_and_the_hash_covers_them_all(tmp_path: Path) -> None:
    data = os.urandom(5 << 20) + b"tail"
    path = tmp_path / "artifact"
    path.write_bytes(data)
    sha = hashlib.sha256()
    with _HashingReader(path, sha) as chunks:
        joined = b"".join(chunks)
        assert chunks.size == len(data)
    assert joined == data
    assert sha.hexdigest() == hashlib.sha256(data).hexdigest()


def test_a_reader_leaving_early_stops_the_thread(tmp_path: Path) -> None:
    path = tmp_path / "artifact"
    path.write_bytes(os.urandom(40 << 20))  # more than the hand-over queue holds
    before = threading.active_count()

    def leave_early() -> None:
        with _HashingReader(path, hashlib.sha256()) as chunks:
            for _chunk in chunks:
                raise RuntimeError("cancelled")

    with pytest.raises(RuntimeError):
        leave_early()
    assert threading.active_count() == before


def test_a_read_error_reaches_the_reader(tmp_path: Path) -> None:
    path = tmp_path / "a-directory"
    path.mkdir()
    with pytest.raises(IsADirectoryError), _HashingReader(path, hashlib.sha256()) as chunks:
        list(chunks)
