"""Reading a backup back whole: checksum from disk, and the archive parsed to its end.

``pg_restore --list`` alone accepts a truncated custom archive, so the check streams the
whole artifact: the file is read once from disk, hashed (SHA-256 against the manifest),
decompressed when pgwarden compressed it, and fed to ``pg_restore --file=/dev/null``, which
must read every data block.  A plain ``.sql.gz`` is decompressed to its end (a damaged or
truncated gzip member fails) and must end with pg_dump's "dump complete" trailer.  Directory
archives are hashed file by file and read by ``pg_restore --file=/dev/null DIR``.

Used as the first steps of every restore drill, and right after a backup is written.  For
archives pgwarden compresses itself, the proof runs *while* the dump is written:
:class:`StreamCheck` sees pg_dump's output on its way into the compressor.  A custom archive's
block framing is walked in-line (:class:`~pgwarden.archive.customframes.FramingCheck`: every
data block present, in order, terminated, nothing after the last), with no second process;
an archive that check does not know (a newer pg_dump's archive version, or one pg_dump
compressed) is fed to ``pg_restore --file=/dev/null`` instead.  After publishing, the SHA-256
is re-read from disk -- equal hashes prove that the file is what was written.  zstd frames
carry their own content checksum, so a later decompression (a drill, a restore) detects any
damage by itself, and every drill reads the archive with stock ``pg_restore``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

import zstandard

from pgwarden.archive import compress
from pgwarden.archive.customframes import Framing, FramingCheck
from pgwarden.archive.digest import (
    PLAIN_TRAILER,
    Digest,
    directory_digest,
    file_digest,
    hashing,
)
from pgwarden.archive.manifest import Manifest
from pgwarden.errors import BackupError, ToolError
from pgwarden.logsetup import get_logger
from pgwarden.pg import pipes, process
from pgwarden.pg.binaries import Tool
from pgwarden.pg.environment import local_tool_environment

log = get_logger("pgwarden.readback")


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
        result = process.run_tool(
            argv, env=local_tool_environment(), name="pg_restore", log=log, cancel=cancel
        )
        _check_restore(result, artifact)
        return digest

    sha = hashlib.sha256()
    counter = [0]
    raw = hashing(artifact, sha, counter)
    try:
        if manifest.format == "plain":
            tail = b""
            for chunk in _decoded(
                raw, manifest.compression.split(":")[0], manifest.compression_stage
            ):
                tail = (tail + chunk)[-4096:]
                if cancel is not None and cancel.is_set():
                    raise BackupError("readback cancelled")
            if PLAIN_TRAILER not in tail:
                raise BackupError(
                    f"{artifact} is incomplete: pg_dump's end-of-dump line is missing"
                )
        else:
            argv = [str(pg_restore.path), "--file=/dev/null"]
            with process.start_tool(
                argv,
                env=local_tool_environment(),
                name="pg_restore",
                log=log,
                stdin=process.PIPE,
                stdout=process.DEVNULL,
                cancel=cancel,
            ) as tool:
                _feed(
                    tool,
                    _decoded(raw, manifest.compression.split(":")[0], manifest.compression_stage),
                )
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


#: bytes read from pg_dump's pipe at a time (into one reused buffer)
READ_CHUNK = 1 << 20


def _read_chunks(source: IO[bytes], size: int = READ_CHUNK) -> Iterator[memoryview]:
    """``source`` (unbuffered: a tool's pipe) to its end, in views of one reused buffer (fresh
    memory is slow to fault in on small VMs): each is valid until the next is asked for."""
    fd = source.fileno()
    buffer = bytearray(size)
    view = memoryview(buffer)
    while True:
        filled = pipes.read_into(fd, view)
        if filled:
            yield view if filled == size else view[:filled]
        if filled < size:
            return


class StreamCheck:
    """Prove an archive whole while it is being written (see the module docstring).

    :meth:`chunks` reads pg_dump's output and shows it to the check.  The end of the stream is
    signalled by :meth:`finish` (pg_dump succeeded: raise what the check found) or
    :meth:`close` (it did not: stop a fallback pg_restore), so that a dump that failed
    half-way is never judged as if it were whole."""

    def __init__(
        self, manifest_format: str, pg_restore: Tool, cancel: threading.Event | None
    ) -> None:
        self._format = manifest_format
        self._pg_restore = pg_restore
        self._cancel = cancel
        self._tail = b""
        self._frames = FramingCheck() if manifest_format == "custom" else None
        self._tool: process.RunningTool | None = None
        self._sink_fd = -1
        #: what the framing check found (custom archives it knows), after :meth:`finish`
        self.framing: Framing | None = None
        if manifest_format not in ("plain", "custom"):
            self._start_restore()

    def chunks(self, source: IO[bytes], size: int = READ_CHUNK) -> Iterator[memoryview]:
        """``source`` read to its end, ``size`` bytes at a time (smaller under a rate cap);
        each chunk is valid until the next is asked for."""
        for chunk in _read_chunks(source, size):
            if self._format == "plain":
                self._tail = (self._tail + bytes(chunk[-4096:]))[-4096:]
            elif self._frames is not None:
                self._frames.feed(chunk)
                if self._frames.fallback is not None:
                    self._fall_back(self._frames)
            else:
                self._to_restore(chunk)
            yield chunk

    def _fall_back(self, frames: FramingCheck) -> None:
        """An archive the framing check does not know: pg_restore parses it instead, from the
        first byte (the check kept what it saw so far)."""
        log.info("archive framing checked by pg_restore", reason=frames.fallback)
        self._frames = None
        self._start_restore()
        self._to_restore(frames.head_bytes())

    def _start_restore(self) -> None:
        argv = [str(self._pg_restore.path), "--file=/dev/null"]
        self._tool = process.start_tool(
            argv,
            env=local_tool_environment(),
            name="pg_restore",
            log=log,
            stdin=process.PIPE,
            stdout=process.DEVNULL,
            cancel=self._cancel,
        )
        assert self._tool.stdin is not None
        self._sink_fd = self._tool.stdin.fileno()

    def _to_restore(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        try:
            while view and self._sink_fd >= 0:
                view = view[os.write(self._sink_fd, view) :]
        except BrokenPipeError:
            self._close_sink()  # pg_restore stopped reading: its exit status says why

    def _close_sink(self) -> None:
        self._sink_fd = -1
        if self._tool is not None and self._tool.stdin is not None:
            with contextlib.suppress(OSError):
                self._tool.stdin.close()

    def finish(self) -> None:
        """The stream is complete: raise what the check found."""
        if self._format == "plain":
            if PLAIN_TRAILER not in self._tail:
                raise BackupError("the dump is incomplete: pg_dump's end-of-dump line is missing")
            return
        if self._frames is not None:
            self.framing = self._frames.finish()
            log.debug(
                "archive framing checked",
                blocks=len(self.framing.blocks),
                bytes=self.framing.size_bytes,
            )
            return
        self._close_sink()
        tool, self._tool = self._tool, None
        assert tool is not None
        _check_restore(tool.wait(), Path("the archive"))

    def close(self) -> None:
        """Abandon the check (the dump failed or was cancelled): stop pg_restore quietly."""
        if self._tool is not None:
            self._close_sink()
            tool, self._tool = self._tool, None
            tool.terminate_group(grace=1.0)
            tool.wait()


def _check_restore(result: process.ToolResult, artifact: Path) -> None:
    if result.cancelled:
        raise BackupError("readback cancelled")
    if not result.ok:
        raise BackupError(
            f"pg_restore cannot read {artifact} whole ({result.describe()}): "
            f"{result.stderr_tail.splitlines()[-1] if result.stderr_tail else 'no message'}"
        )


__all__ = ["Digest", "ToolError", "check_artifact", "directory_digest", "file_digest"]
