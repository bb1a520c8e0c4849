"""Reading a backup for a restore: the checksum first, and the archive made restorable.

:func:`checksum_and_stage` reads the artifact once from disk, hashing it (SHA-256 against the
manifest) and, for a ``.dump.zst`` restored with ``pg_restore --jobs`` (which needs a seekable
file), decompressing it at the same time into a private spool file beside the storage
(``NAME.restore-<random>.partial``: removed afterwards, and by the start-up clean-up of
``*.partial`` files after a crash).  Nothing is restored before the checksum matched.

The spool never fills the disk: while writing it, free space is checked, and below
:func:`spool_floor` the spool is abandoned; the restore then streams the archive into a serial
``pg_restore`` instead (:func:`decompressed`).  A damaged compressed stream is reported as the
``archive`` step, after the checksum (which a damaged file normally fails first).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import secrets
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import zstandard

from pgwarden.backup import compress, customtoc, readback
from pgwarden.backup.manifest import Manifest
from pgwarden.backup.outcome import StepError
from pgwarden.logsetup import get_logger

log = get_logger("pgwarden.verify")

SPOOL_SUFFIX = ".partial"
_SPACE_CHECK_EVERY = 64 << 20
#: compressed input per decompression call (see compress.DECOMPRESS_PIECE: 2.8 s -> 1.2 s
#: per GB here, with the spool written on its own thread)
_DECOMPRESS_INPUT = compress.DECOMPRESS_PIECE


def spool_floor(path: Path) -> int:
    """Free bytes a spool file must leave on its file system: 5% of it, at least 1 GiB."""
    info = os.statvfs(path)
    return max(1 << 30, info.f_blocks * info.f_frsize // 20)


def _free(path: Path) -> int:
    info = os.statvfs(path)
    return info.f_bavail * info.f_frsize


@dataclass
class Staged:
    """The checksum result, and what the restore reads: ``source`` (the artifact itself or
    the spool file), or ``None`` when the archive must be streamed (:func:`decompressed`)."""

    sha256: str
    size_bytes: int
    source: Path | None
    spool: Path | None = None
    notes: list[str] = field(default_factory=list)

    def remove_spool(self) -> None:
        if self.spool is not None:
            self.spool.unlink(missing_ok=True)
            self.spool = None


def codec_of(manifest: Manifest) -> str | None:
    """The codec pgwarden itself applied (and must undo), or ``None`` when pg_dump compressed."""
    codec = manifest.compression.split(":")[0]
    if manifest.compression_stage != "stream" or codec == "none":
        return None
    return codec


class _Decoder(Protocol):
    @property
    def eof(self) -> bool: ...

    def decompress(self, data: bytes | memoryview) -> bytes: ...


def _decoder(codec: str) -> _Decoder:
    if codec == "zstd":
        return zstandard.ZstdDecompressor().decompressobj()
    return _GzipMembers()


class _GzipMembers:
    """Incremental decompression of a multi-member gzip stream (pgwarden's parallel gzip)."""

    def __init__(self) -> None:
        self._d = zlib.decompressobj(31)
        self.in_member = False

    def decompress(self, data: bytes | memoryview) -> bytes:
        out = bytearray()
        while data:
            self.in_member = True
            out += self._d.decompress(data)
            if self._d.eof:
                data = self._d.unused_data
                self._d = zlib.decompressobj(31)
                self.in_member = False
            else:
                data = b""
        return bytes(out)

    @property
    def eof(self) -> bool:
        return not self.in_member


def _cancelled(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise StepError("cancelled", "the drill was cancelled")


def checksum_and_stage(
    manifest: Manifest, artifact: Path, *, spool_dir: Path | None,
    cancel: threading.Event | None = None,
) -> Staged:  # fmt: skip
    """Hash ``artifact`` (and spool it decompressed into ``spool_dir`` when given)."""
    if manifest.format == "directory":
        digest = readback.directory_digest(artifact)
        if digest.sha256 != manifest.sha256:
            bad = sorted(n for n, s in digest.files.items() if manifest.files.get(n) != s)
            missing = sorted(set(manifest.files) - set(digest.files))
            raise StepError("checksum", f"{artifact}: changed files {bad or 'none'}, missing "
                                        f"{missing or 'none'}", expected=manifest.sha256,
                            actual=digest.sha256)  # fmt: skip
        return Staged(digest.sha256, digest.size_bytes, artifact)
    codec = codec_of(manifest)
    spool = None
    if spool_dir is not None and codec is not None and manifest.format == "custom":
        spool = spool_dir / f"{artifact.name}.restore-{secrets.token_hex(4)}{SPOOL_SUFFIX}"
    reader = _Reader(artifact, codec, spool, plain=manifest.format == "plain")
    try:
        reader.run(cancel)
    finally:
        reader.close()
    staged = Staged(reader.sha.hexdigest(), reader.size, reader.spool if codec else artifact,
                    reader.spool, reader.notes)  # fmt: skip
    if staged.sha256 != manifest.sha256:
        staged.remove_spool()
        raise StepError(
            "checksum",
            f"{artifact}: the file's SHA-256 differs from the manifest's ({staged.size_bytes} "
            f"bytes, manifest says {manifest.size_bytes})",
            expected=manifest.sha256, actual=staged.sha256,
        )  # fmt: skip
    if reader.damage is not None:
        staged.remove_spool()
        raise StepError("archive", reader.damage)
    return staged


class _Reader:
    """One pass over a file artifact: hash it; decompress it when a spool is written or a
    plain dump's trailer must be found."""

    def __init__(self, artifact: Path, codec: str | None, spool: Path | None, *,
                 plain: bool) -> None:  # fmt: skip
        self.artifact = artifact
        self.codec = codec
        self.spool = spool
        self.plain = plain
        self.sha = hashlib.sha256()
        self.size = 0
        self.damage: str | None = None
        self.notes: list[str] = []
        self._decoder = _decoder(codec) if codec is not None else None
        self._decode = spool is not None or plain
        self._tail = b""
        self._writer: _SpoolWriter | None = None
        self.offsets = customtoc.OffsetFinder() if spool is not None else None

    def run(self, cancel: threading.Event | None) -> None:
        try:
            if self.spool is not None:
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                fd = os.open(self.spool, flags, 0o600)
                self._writer = _SpoolWriter(fd, self.spool.parent, self.offsets)
            # reading and SHA-256 on another core, beside the decompression
            with _HashingReader(self.artifact, self.sha) as chunks:
                for chunk in chunks:
                    _cancelled(cancel)
                    if self._decode and self.damage is None:
                        self._take(chunk)
                self.size = chunks.size
            if self._writer is not None:
                self._writer.finish()
            if self._writer is not None and self.offsets is not None and self.damage is None:
                count = self.offsets.write(self._writer.fd)
                if count:
                    self.notes.append(f"data offsets recorded for {count} blocks")
        except OSError as exc:
            self.drop_spool()
            raise StepError("checksum", f"cannot read {self.artifact} or write its spool: "
                                        f"{exc.strerror}") from exc  # fmt: skip
        except BaseException:
            self.drop_spool()
            raise
        if self._decode and self.damage is None:
            if self._decoder is not None and not self._decoder.eof:
                self.damage = f"{self.artifact} is truncated: the {self.codec} stream ends early"
            elif self.plain and readback.PLAIN_TRAILER not in self._tail:
                self.damage = (
                    f"{self.artifact} is incomplete: pg_dump's end-of-dump line is missing"
                )

    def _take(self, chunk: bytes) -> None:
        # small inputs give small outputs, which the allocator reuses: a big fresh buffer per
        # call costs a page fault per 4 KiB, more than the decompression itself
        view = memoryview(chunk)
        for start in range(0, len(chunk), _DECOMPRESS_INPUT):
            if self.damage is not None or not self._decode:
                return
            self._take_piece(view[start : start + _DECOMPRESS_INPUT])

    def _take_piece(self, piece: memoryview) -> None:
        try:
            out = self._decoder.decompress(piece) if self._decoder else piece.tobytes()
        except (zstandard.ZstdError, zlib.error) as exc:
            self.damage = f"{self.artifact} is damaged: {exc}"
            return
        if self.plain:
            self._tail = (self._tail + out[-4096:])[-4096:]
        if self._writer is None:
            return
        if self._writer.short_of_space:
            self.notes.append(
                "not enough space to decompress beside the storage "
                f"(keeping {self._writer.floor} bytes free): streaming instead"
            )
            self.drop_spool()
            self._decode = self.plain
            return
        self._writer.put(out)

    def drop_spool(self) -> None:
        self.close()
        if self.spool is not None:
            self.spool.unlink(missing_ok=True)
            self.spool = None

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class _SpoolWriter:
    """Writes the decompressed archive to the spool on a thread of its own (beside the
    decompression: each takes about a second per GB on a small VM), finds the data offsets in
    it, and keeps :func:`spool_floor` bytes free on the file system."""

    def __init__(self, fd: int, directory: Path,
                 offsets: customtoc.OffsetFinder | None) -> None:  # fmt: skip
        self.fd = fd
        self.floor = spool_floor(directory)
        self.short_of_space = False
        self._directory = directory
        self._offsets = offsets
        self._since_check = 0
        self._error: OSError | None = None
        self._abandoned = False
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=32)
        self._thread = threading.Thread(target=self._run, name="drill-spool", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (out := self._queue.get()) is not None:
            if self._error is not None or self.short_of_space or self._abandoned:
                continue  # drain: the reader learns of it on its next put()
            try:
                self._write(out)
            except OSError as exc:
                self._error = exc

    def _write(self, out: bytes) -> None:
        view = memoryview(out)
        while view:
            view = view[os.write(self.fd, view) :]
        if self._offsets is not None:
            self._offsets.feed(out)
        self._since_check += len(out)
        if self._since_check >= _SPACE_CHECK_EVERY:
            self._since_check = 0
            self.short_of_space = _free(self._directory) < self.floor

    def put(self, out: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(out)

    def finish(self) -> None:
        """Wait until everything put is written; raise a write error."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        if self._thread.is_alive():
            self._abandoned = True
            self._queue.put(None)
            self._thread.join()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _HashingReader:
    """Reads the artifact and hashes it on a thread of its own, handing the chunks on in
    order: the reads and the hashing stay off the decompression's path."""

    def __init__(self, path: Path, sha: Any) -> None:
        self.size = 0
        self._path = path
        self._sha = sha
        self._queue: queue.Queue[bytes | OSError | None] = queue.Queue(maxsize=16)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drill-read-sha256", daemon=True)

    def _run(self) -> None:
        try:
            with self._path.open("rb") as fh:
                while not self._stop.is_set() and (chunk := fh.read(compress.READ_CHUNK)):
                    self._sha.update(chunk)
                    self.size += len(chunk)
                    self._queue.put(chunk)
        except OSError as exc:
            self._queue.put(exc)
            return
        self._queue.put(None)

    def __iter__(self) -> Iterator[bytes]:
        while (item := self._queue.get()) is not None:
            if isinstance(item, OSError):
                raise item
            yield item

    def __enter__(self) -> _HashingReader:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        while self._thread.is_alive():  # a reader left early: unblock the thread's put()
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=0.05)


def decompressed(
    manifest: Manifest, artifact: Path, cancel: threading.Event | None = None
) -> Iterator[bytes]:
    """The archive's bytes as pg_dump wrote them (for a streamed restore); raises
    :class:`StepError` (``archive``) when the compressed stream is damaged or truncated."""
    codec = codec_of(manifest)
    try:
        with artifact.open("rb") as fh:
            chunks = compress.read_chunks(fh)
            if codec == "zstd":
                stream = compress.zstd_decompress(chunks)
            elif codec == "gzip":
                stream = compress.gzip_decompress(chunks)
            else:
                stream = chunks
            for chunk in stream:
                _cancelled(cancel)
                yield chunk
    except (zstandard.ZstdError, zlib.error) as exc:
        raise StepError("archive", f"{artifact} is damaged: {exc}") from exc
    except OSError as exc:
        raise StepError("archive", f"cannot read {artifact}: {exc.strerror}") from exc
