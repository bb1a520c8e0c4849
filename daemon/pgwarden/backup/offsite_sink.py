"""The byte plumbing of an off-site upload: a file-like face for an ``Upload`` sink.

``pyrage`` (the age stage, :func:`pgwarden.archive.encrypt.encrypt_stream`) writes into a
file object; :class:`UploadWriter` is one, forwarding every write to the
:class:`~pgwarden.storage.objects.Upload` (which buffers exactly one part), counting the bytes
and refusing to go on once the cancel event is set.  :func:`copy_file` is the unencrypted
path: fixed-size reads from the artifact, hashed on the way.
"""

from __future__ import annotations

import io
from threading import Event
from typing import TYPE_CHECKING

from pgwarden.errors import OffsiteError
from pgwarden.storage.objects import Upload

if TYPE_CHECKING:
    from hashlib import _Hash

#: bytes read from the artifact at a time (the Upload holds one part, not this)
CHUNK = 1024 * 1024
CANCELLED = "cancelled: pgwarden is stopping"


class UploadWriter(io.RawIOBase):
    """A write-only binary file whose bytes go to an :class:`Upload`."""

    def __init__(self, upload: Upload, cancel: Event | None) -> None:
        super().__init__()
        self._upload = upload
        self._cancel = cancel
        self.written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        if self._cancel is not None and self._cancel.is_set():
            raise OffsiteError(CANCELLED)
        view = memoryview(data).cast("B")
        self._upload.write(view)
        self.written += len(view)
        return len(view)


class HashingReader(io.RawIOBase):
    """A read-only binary file over ``source`` hashing every byte read (the age stage's input:
    the plaintext must match the local manifest as the unencrypted copy's does)."""

    def __init__(self, source: io.BufferedIOBase, digest: _Hash) -> None:
        super().__init__()
        self._source = source
        self.digest = digest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        count = self._source.readinto(buffer)
        if count:
            self.digest.update(memoryview(buffer)[:count])
        return count or 0


def copy_file(source: io.BufferedIOBase, sink: UploadWriter, digest: _Hash) -> _Hash:
    """Copy ``source`` into ``sink`` in :data:`CHUNK` reads, hashing into ``digest``."""
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    while True:
        count = source.readinto(view)
        if not count:
            return digest
        digest.update(view[:count])
        sink.write(view[:count])  # an Upload copies what it is given into its part buffer
