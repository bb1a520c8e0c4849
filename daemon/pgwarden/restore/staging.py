"""Reading a backup for a restore: the checksum first, and the archive made restorable.

:func:`checksum_and_stage` reads the artifact once from disk, hashing it (SHA-256 against the
manifest) and, for a ``.dump.zst`` restored with ``pg_restore --jobs`` (which needs a seekable
file), decompressing it at the same time into a private spool file beside the storage
(``NAME.restore-<random>.partial``: removed afterwards, and by the start-up clean-up of
``*.partial`` files after a crash).  Nothing is restored before the checksum matched.

The spool never fills the disk: while writing it, free space is checked, and below
:func:`pgwarden.restore.spool.spool_floor` the spool is abandoned; the restore then streams the
archive into a serial ``pg_restore`` instead (:func:`decompressed`).  A damaged compressed stream is reported as the
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
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import zstandard

from pgwarden.archive import compress, customtoc, digest, zstdframes
from pgwarden.archive.manifest import Manifest
from pgwarden.logsetup import get_logger
from pgwarden.restore.outcome import StepError
from pgwarden.restore.spool import SPOOL_SUFFIX, SpoolWriter

log = get_logger("pgwarden.verify")


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


class _Decoding(Protocol):
    """Decompressed bytes in order, fed the artifact's chunks (:class:`zstdframes.FrameDecoder`
    for zstd, :class:`_GzipMembers`, :class:`_Uncompressed`)."""

    @property
    def inside_frame(self) -> bool: ...

    def feed(self, data: bytes) -> Iterator[zstdframes.Decoded]: ...

    def finish(self) -> Iterator[zstdframes.Decoded]: ...

    def close(self) -> None: ...


def _decoding(codec: str | None, sink: zstdframes.FrameSink | None) -> _Decoding:
    if codec == "zstd":
        return zstdframes.FrameDecoder(sink=sink)
    return _GzipMembers() if codec == "gzip" else _Uncompressed()


class _GzipMembers:
    """:class:`compress.GzipMembers` behind the decoding interface."""

    def __init__(self) -> None:
        self._members = compress.GzipMembers()

    @property
    def inside_frame(self) -> bool:
        return self._members.inside_frame

    def feed(self, data: bytes) -> Iterator[zstdframes.Decoded]:
        for out in self._members.pieces(data):
            yield zstdframes.Decoded(out, False)

    def finish(self) -> Iterator[zstdframes.Decoded]:
        return iter(())

    def close(self) -> None:
        pass


class _Uncompressed:
    """A plain dump stored as it is: its bytes are the dump's."""

    inside_frame = False

    def feed(self, data: bytes) -> Iterator[zstdframes.Decoded]:
        yield zstdframes.Decoded(data, False)

    def finish(self) -> Iterator[zstdframes.Decoded]:
        return iter(())

    def close(self) -> None:
        pass


def _cancelled(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise StepError("cancelled", "the drill was cancelled")


def checksum_and_stage(
    manifest: Manifest,
    artifact: Path,
    *,
    spool_dir: Path | None,
    cancel: threading.Event | None = None,
) -> Staged:
    """Hash ``artifact`` (and spool it decompressed into ``spool_dir`` when given)."""
    if manifest.format == "directory":
        found = digest.directory_digest(artifact)
        if found.sha256 != manifest.sha256:
            bad = sorted(n for n, s in found.files.items() if manifest.files.get(n) != s)
            missing = sorted(set(manifest.files) - set(found.files))
            raise StepError(
                "checksum",
                f"{artifact}: changed files {bad or 'none'}, missing {missing or 'none'}",
                expected=manifest.sha256,
                actual=found.sha256,
            )
        return Staged(found.sha256, found.size_bytes, artifact)
    codec = codec_of(manifest)
    spool = None
    if spool_dir is not None and codec is not None and manifest.format == "custom":
        spool = spool_dir / f"{artifact.name}.restore-{secrets.token_hex(4)}{SPOOL_SUFFIX}"
    reader = _Reader(artifact, codec, spool, plain=manifest.format == "plain")
    try:
        reader.run(cancel)
    finally:
        reader.close()
    staged = Staged(
        reader.sha.hexdigest(),
        reader.size,
        reader.spool if codec else artifact,
        reader.spool,
        reader.notes,
    )
    if staged.sha256 != manifest.sha256:
        staged.remove_spool()
        raise StepError(
            "checksum",
            f"{artifact}: the file's SHA-256 differs from the manifest's ({staged.size_bytes} "
            f"bytes, manifest says {manifest.size_bytes})",
            expected=manifest.sha256,
            actual=staged.sha256,
        )
    if reader.damage is not None:
        staged.remove_spool()
        raise StepError("archive", reader.damage)
    return staged


class _Reader:
    """One pass over a file artifact: hash it; decompress it when a spool is written or a
    plain dump's trailer must be found."""

    def __init__(
        self, artifact: Path, codec: str | None, spool: Path | None, *, plain: bool
    ) -> None:
        self.artifact = artifact
        self.codec = codec
        self.spool = spool
        self.plain = plain
        self.sha = hashlib.sha256()
        self.size = 0
        self.damage: str | None = None
        self.notes: list[str] = []
        self._decoder: _Decoding | None = None
        self._decode = spool is not None or plain
        self._tail = b""
        self._writer: SpoolWriter | None = None
        self.offsets = customtoc.OffsetFinder() if spool is not None else None

    def run(self, cancel: threading.Event | None) -> None:
        try:
            if self.spool is not None:
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                fd = os.open(self.spool, flags, 0o600)
                self._writer = SpoolWriter(fd, self.spool.parent, self.offsets)
            if self._decode:
                # whole zstd frames are written into the spool by the threads that decompress them
                sink = self._writer.write_at if self._writer is not None else None
                self._decoder = _decoding(self.codec, sink)
            # reading and SHA-256 on another core, beside the decompression
            with _HashingReader(self.artifact, self.sha) as chunks:
                for chunk in chunks:
                    _cancelled(cancel)
                    if self._decode and self.damage is None:
                        self._take(chunk)
                self.size = chunks.size
            if self._decode and self.damage is None:
                self._finish_decoding()
            if self._writer is not None:
                self._writer.finish()
            if self._writer is not None and self.offsets is not None and self.damage is None:
                count = self.offsets.write(self._writer.fd)
                if count:
                    self.notes.append(f"data offsets recorded for {count} blocks")
        except OSError as exc:
            self.drop_spool()
            raise StepError(
                "checksum", f"cannot read {self.artifact} or write its spool: {exc.strerror}"
            ) from exc
        except BaseException:
            self.drop_spool()
            raise
        if self._decode and self.damage is None:
            if self._decoder is not None and self._decoder.inside_frame:
                self.damage = f"{self.artifact} is truncated: the {self.codec} stream ends early"
            elif self.plain and digest.PLAIN_TRAILER not in self._tail:
                self.damage = (
                    f"{self.artifact} is incomplete: pg_dump's end-of-dump line is missing"
                )

    def _take(self, chunk: bytes) -> None:
        assert self._decoder is not None
        self._decoded(self._decoder.feed(chunk))

    def _finish_decoding(self) -> None:
        assert self._decoder is not None
        self._decoded(self._decoder.finish())

    def _decoded(self, pieces: Iterator[zstdframes.Decoded]) -> None:
        try:
            for out in pieces:
                if self.damage is not None or not self._decode:
                    return
                self._deliver(out.data, written=out.sunk)
        except (zstandard.ZstdError, zlib.error) as exc:
            self.damage = f"{self.artifact} is damaged: {exc}"

    def _deliver(self, out: bytes, *, written: bool = False) -> None:
        """Decompressed bytes, in order: the plain dump's tail kept, the spool written."""
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
        self._writer.put(out, written=written)

    def drop_spool(self) -> None:
        self.close()
        if self.spool is not None:
            self.spool.unlink(missing_ok=True)
            self.spool = None

    def close(self) -> None:
        if self._decoder is not None:
            self._decoder.close()
        if self._writer is not None:
            self._writer.close()
            self._writer = None


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
) -> Generator[bytes, None, None]:
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


def write_toc_head(manifest: Manifest, artifact: Path, directory: Path) -> Path | None:
    """The head of a streamed ``.dump.zst`` -- header and table of contents, no data -- as a
    file of its own beside the storage (``NAME.restore-<random>.partial``, like a spool):
    ``pg_restore --jobs`` reads it for the post-data section, whose items need no data.  Only
    the first bytes are decompressed.  ``None`` when the head cannot be read that way (an
    archive version this pgwarden does not know, a table of contents past
    :data:`customtoc.HEAD_LIMIT`): the post-data section is then restored serially from the
    stream.  Raises :class:`StepError` (``archive``) for a damaged stream."""
    head = bytearray()
    chunks = decompressed(manifest, artifact)
    with contextlib.closing(chunks):
        for chunk in chunks:
            head += chunk
            try:
                toc = customtoc.read_toc(head)
            except customtoc.Incomplete:
                if len(head) > customtoc.HEAD_LIMIT:
                    return None
                continue
            except customtoc.Unexpected:
                return None
            break
        else:
            return None
    path = directory / f"{artifact.name}.restore-{secrets.token_hex(4)}{SPOOL_SUFFIX}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(head[: toc.data_start])
    except OSError:
        path.unlink(missing_ok=True)
        raise
    return path
