"""Reading a backup back whole: checksum from disk, and the archive parsed to its end.

``pg_restore --list`` alone accepts a truncated custom archive, so the check streams the
whole artifact: the file is read once from disk, hashed (SHA-256 against the manifest),
decompressed when pgwarden compressed it, and fed to ``pg_restore --file=/dev/null``, which
must read every data block.  A plain ``.sql.gz`` is decompressed to its end (a damaged or
truncated gzip member fails) and must end with pg_dump's "dump complete" trailer.  Directory
archives are hashed file by file and read by ``pg_restore --file=/dev/null DIR``.

Used as the first steps of every restore drill, and right after a backup is written.  For
archives pgwarden compresses itself, the parse runs *while* the dump is written:
:class:`StreamCheck` feeds pg_dump's output, on its way into the compressor, to
``pg_restore`` on another thread; after publishing, the SHA-256 is re-read from disk — equal
hashes prove that the file is what was written.  zstd frames carry their own content
checksum, so a later decompression (a drill, a restore) detects any damage by itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import threading
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import zstandard

from pgwarden.backup import compress
from pgwarden.backup.manifest import Manifest
from pgwarden.errors import BackupError, ToolError
from pgwarden.logsetup import get_logger
from pgwarden.pg import process
from pgwarden.pg.binaries import Tool

log = get_logger("pgwarden.readback")

PLAIN_TRAILER = b"PostgreSQL database dump complete"


@dataclass(frozen=True)
class Digest:
    size_bytes: int
    sha256: str
    files: dict[str, str]


def _hashing(path: Path, digest: hashlib._Hash, counter: list[int]) -> Iterator[bytes]:
    try:
        with path.open("rb") as fh:
            for chunk in compress.read_chunks(fh):
                digest.update(chunk)
                counter[0] += len(chunk)
                yield chunk
    except OSError as exc:
        raise BackupError(f"cannot read {path}: {exc.strerror}") from exc


def directory_digest(path: Path) -> Digest:
    """Per-file SHA-256 of a directory archive, and one SHA-256 over the sorted listing."""
    files: dict[str, str] = {}
    size = 0
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        digest = hashlib.sha256()
        counter = [0]
        for _ in _hashing(item, digest, counter):
            pass
        files[str(item.relative_to(path))] = digest.hexdigest()
        size += counter[0]
    listing = "".join(f"{name} {sha}\n" for name, sha in sorted(files.items()))
    return Digest(size, hashlib.sha256(listing.encode()).hexdigest(), files)


def _decoded(chunks: Iterable[bytes], codec: str, stage: str) -> Iterator[bytes]:
    if stage != "stream" or codec == "none":
        return iter(chunks)
    if codec == "zstd":
        return compress.zstd_decompress(chunks)
    return compress.gzip_decompress(chunks)


def _feed(tool: process.RunningTool, chunks: Iterable[bytes]) -> None:
    assert tool.stdin is not None
    try:
        for chunk in chunks:
            view = memoryview(chunk)
            while view:  # a raw pipe may take part of a chunk (a signal arrived)
                view = view[tool.stdin.write(view) or 0 :]
    except BrokenPipeError:
        pass  # pg_restore stopped reading: its exit status says why
    finally:
        with contextlib.suppress(BrokenPipeError):
            tool.stdin.close()


def check_artifact(
    manifest: Manifest,
    artifact: Path,
    pg_restore: Tool,
    *,
    cancel: threading.Event | None = None,
    expect_sha256: bool = True,
) -> Digest:
    """Hash ``artifact`` and parse it to its end; :class:`BackupError` on any problem."""
    if manifest.format == "directory":
        digest = directory_digest(artifact)
        if expect_sha256 and digest.sha256 != manifest.sha256:
            bad = sorted(n for n, s in digest.files.items() if manifest.files.get(n) != s)
            missing = sorted(set(manifest.files) - set(digest.files))
            raise BackupError(
                f"checksum mismatch in {artifact}: changed {bad or 'none'}, missing {missing or 'none'}"
            )
        argv = [str(pg_restore.path), "--file=/dev/null", str(artifact)]
        result = process.run_tool(argv, env=None, name="pg_restore", log=log, cancel=cancel)
        _check_restore(result, artifact)
        return digest

    sha = hashlib.sha256()
    counter = [0]
    raw = _hashing(artifact, sha, counter)
    try:
        if manifest.format == "plain":
            tail = b""
            for chunk in _decoded(raw, manifest.compression.split(":")[0],
                                  manifest.compression_stage):  # fmt: skip
                tail = (tail + chunk)[-4096:]
                if cancel is not None and cancel.is_set():
                    raise BackupError("readback cancelled")
            if PLAIN_TRAILER not in tail:
                raise BackupError(
                    f"{artifact} is incomplete: pg_dump's end-of-dump line is missing"
                )
        else:
            argv = [str(pg_restore.path), "--file=/dev/null"]
            with process.start_tool(argv, env=None, name="pg_restore", log=log,
                                    stdin=process.PIPE, stdout=process.DEVNULL,
                                    cancel=cancel) as tool:  # fmt: skip
                _feed(tool, _decoded(raw, manifest.compression.split(":")[0],
                                     manifest.compression_stage))  # fmt: skip
                for _ in raw:  # pg_restore may stop early; the checksum needs every byte
                    pass
                result = tool.wait()
            _check_restore(result, artifact)
    except (zstandard.ZstdError, zlib.error) as exc:
        raise BackupError(f"{artifact} is damaged: {exc}") from exc
    digest = Digest(counter[0], sha.hexdigest(), {})
    if expect_sha256 and digest.sha256 != manifest.sha256:
        raise BackupError(
            f"checksum mismatch for {artifact}: manifest says {manifest.sha256[:16]}..., "
            f"file has {digest.sha256[:16]}... ({digest.size_bytes} bytes)"
        )
    return digest


_DONE = object()


class StreamCheck:
    """Parse an archive to its end while it is being written (see the module docstring)."""

    def __init__(
        self, manifest_format: str, pg_restore: Tool, cancel: threading.Event | None
    ) -> None:
        self._format = manifest_format
        self._pg_restore = pg_restore
        self._cancel = threading.Event()
        self._outer_cancel = cancel
        self._queue: queue.Queue[object] = queue.Queue(maxsize=64)
        self._error: BaseException | None = None
        self._ended = False
        self._thread = threading.Thread(target=self._run, name="stream-check", daemon=True)
        self._thread.start()

    def tee(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """Pass ``chunks`` through, queueing a copy for the parse.  The end of the stream is
        signalled by :meth:`finish` (pg_dump succeeded) or :meth:`close` (it did not), so
        that a dump that failed half-way is never parsed as if it were whole."""
        for chunk in chunks:
            if self._outer_cancel is not None and self._outer_cancel.is_set():
                self._cancel.set()
            if self._thread.is_alive():
                self._queue.put(chunk)
            yield chunk

    def _incoming(self) -> Iterator[bytes]:
        while (item := self._queue.get()) is not _DONE:
            assert isinstance(item, bytes)
            yield item
        self._ended = True

    def _drain(self) -> None:
        while not self._ended:
            self._ended = self._queue.get() is _DONE

    def _run(self) -> None:
        try:
            decoded = self._incoming()
            if self._format == "plain":
                tail = b""
                for chunk in decoded:
                    tail = (tail + chunk)[-4096:]
                if PLAIN_TRAILER not in tail:
                    raise BackupError(
                        "the dump is incomplete: pg_dump's end-of-dump line is missing"
                    )
                return
            argv = [str(self._pg_restore.path), "--file=/dev/null"]
            with process.start_tool(argv, env=None, name="pg_restore", log=log,
                                    stdin=process.PIPE, stdout=process.DEVNULL,
                                    cancel=self._cancel) as tool:  # fmt: skip
                _feed(tool, decoded)
                result = tool.wait()
            _check_restore(result, Path("the archive"))
        except BaseException as exc:  # noqa: BLE001 - handed to the writer's thread in finish()
            self._error = exc
        finally:
            self._drain()

    def close(self) -> None:
        """Abandon the check (the dump failed or was cancelled): stop pg_restore quietly."""
        if self._thread.is_alive():
            self._cancel.set()
            with contextlib.suppress(queue.Full):
                self._queue.put(_DONE, timeout=5)
            self._thread.join(30)

    def finish(self) -> None:
        """The stream is complete: wait for the parse and raise what it found."""
        if self._thread.is_alive():
            self._queue.put(_DONE)
        self._thread.join()
        if self._error is not None:
            raise self._error


def file_digest(path: Path) -> Digest:
    sha = hashlib.sha256()
    counter = [0]
    for _ in _hashing(path, sha, counter):
        pass
    return Digest(counter[0], sha.hexdigest(), {})


def _check_restore(result: process.ToolResult, artifact: Path) -> None:
    if result.cancelled:
        raise BackupError("readback cancelled")
    if not result.ok:
        raise BackupError(
            f"pg_restore cannot read {artifact} whole ({result.describe()}): "
            f"{result.stderr_tail.splitlines()[-1] if result.stderr_tail else 'no message'}"
        )


__all__ = ["Digest", "ToolError", "check_artifact", "directory_digest"]
