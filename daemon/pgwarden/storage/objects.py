"""The object-store interface off-site copies are written through (S3 and compatibles).

Local storage (:class:`pgwarden.storage.base.Storage`) is path-based with an atomic rename; an
object store has neither paths nor renames: an object appears whole when its (multipart) upload
completes.  Keys given to an :class:`ObjectStore` are relative to the destination's prefix
(``myproject_prod/20261126T031500Z-1a2b3c4d.dump.age``).

Writing an object is :meth:`ObjectStore.upload`: a writable sink that buffers exactly one part,
uploads every part at the same size except the last, hashes what passes through, and on
:meth:`Upload.complete` proves the stored object is the bytes sent.  Leaving the ``with`` block
without ``complete()`` (an exception, a cancel) aborts the multipart upload: no orphan parts.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from threading import Event
from types import TracebackType
from typing import BinaryIO


class ChecksumMode(enum.StrEnum):
    """How the stored object was proven equal to what was sent."""

    SHA256_COMPOSITE = "sha256-composite"  # S3 additional checksums: per part, checked by server
    MD5_ETAG = "md5-etag"  # Content-MD5 per part + the multipart ETag (md5 of the parts' md5s)


@dataclass(frozen=True)
class ObjectInfo:
    key: str  # relative to the prefix
    size: int
    modified: datetime
    etag: str


@dataclass(frozen=True)
class PutResult:
    key: str
    size: int
    sha256: str  # hex sha256 of the whole object, computed while sending
    parts: int
    part_size: int
    checksum: ChecksumMode
    version_id: str | None


@dataclass(frozen=True)
class ProbeResult:
    """``pgwarden check``: could a small object be written, read back and removed?"""

    writable: bool
    versioning: str | None  # None (never enabled), "Enabled", "Suspended"
    error: str | None


class Upload(ABC):
    """A writable sink for one object (see the module docstring)."""

    @abstractmethod
    def write(self, data: bytes | bytearray | memoryview) -> int: ...

    @abstractmethod
    def complete(self) -> PutResult: ...

    @abstractmethod
    def abort(self) -> None: ...

    def __enter__(self) -> Upload:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.abort()  # a no-op after complete()


class ObjectStore(ABC):
    @property
    @abstractmethod
    def location(self) -> str:
        """``s3://bucket/prefix`` (plus the endpoint's host when not AWS); never a key."""

    @abstractmethod
    def upload(
        self,
        key: str,
        *,
        expected_size: int,
        cancel: Event | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Upload:
        """A sink for ``key``; ``expected_size`` (an estimate) chooses the part size."""

    @abstractmethod
    def put_small(self, key: str, data: bytes) -> PutResult:
        """One PUT for a small object (a manifest), its sha256 checked by the server."""

    @abstractmethod
    def get_small(self, key: str, *, max_bytes: int = 16 * 1024 * 1024) -> bytes:
        """A small object's bytes; :class:`~pgwarden.errors.OffsiteError` if missing or larger."""

    @abstractmethod
    def download(
        self,
        key: str,
        sink: BinaryIO,
        *,
        cancel: Event | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Stream ``key`` into ``sink`` (bounded memory, stall limit); return the byte count."""

    @abstractmethod
    def open_read(self, key: str) -> BinaryIO:
        """A readable stream of ``key`` (for a decrypting pipeline); the caller closes it."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object under ``prefix`` (relative), every page, sorted by key."""

    @abstractmethod
    def head(self, key: str) -> ObjectInfo | None:
        """The object's metadata, or ``None`` when it does not exist."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete ``key`` and, on a versioned bucket, every version of it, so the space is freed.
        Missing is not an error."""

    @abstractmethod
    def abort_stale_uploads(self, prefix: str = "") -> int:
        """Abort multipart uploads left open directly under ``prefix`` by a killed process (a
        deeper key is another host's prefix); the count."""

    @abstractmethod
    def probe(self) -> ProbeResult:
        """Write, read back and delete a small test object; note bucket versioning."""
