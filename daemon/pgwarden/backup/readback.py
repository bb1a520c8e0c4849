"""Reading a backup back whole: checksum from disk, and the archive parsed to its end.

``pg_restore --list`` alone accepts a truncated custom archive, so the check streams the
whole artifact: the file is read once from disk, hashed (SHA-256 against the manifest),
decompressed when pgwarden compressed it, and fed to ``pg_restore --file=/dev/null``, which
must read every data block.  A plain ``.sql.gz`` is decompressed to its end (a damaged or
truncated gzip member fails) and must end with pg_dump's "dump complete" trailer.  Directory
archives are hashed file by file and read by ``pg_restore --file=/dev/null DIR``.

Used as the first steps of every restore drill, and right after a backup is written.  For
archives pgwarden compresses itself, the parse runs *while* the dump is written:
:class:`StreamCheck` reads pg_dump's output on its way into the compressor, and ``tee(2)`` hands
the same bytes to ``pg_restore`` without a copy through Python; after publishing, the SHA-256 is re-read from disk — equal
hashes prove that the file is what was written.  zstd frames carry their own content
checksum, so a later decompression (a drill, a restore) detects any damage by itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import threading
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

import zstandard

from pgwarden.archive import compress
from pgwarden.archive.digest import (
    PLAIN_TRAILER,
    Digest,
    directory_digest,
    file_digest,
    hashing,
)
from pgwarden.archive.manifest import Manifest
from pgwarden.backup import pipetee
from pgwarden.errors import BackupError, ToolError
from pgwarden.logsetup import get_logger
from pgwarden.pg import process
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


class StreamCheck:
    """Parse an archive to its end while it is being written (see the module docstring).

    :meth:`chunks` reads pg_dump's output; every byte also reaches ``pg_restore
    --file=/dev/null`` through ``tee(2)`` (:mod:`pgwarden.backup.pipetee`).  The end of the
    stream is signalled by :meth:`finish` (pg_dump succeeded: wait for the parse and raise what
    it found) or :meth:`close` (it did not: stop pg_restore), so that a dump that failed half-way
    is never parsed as if it were whole."""

    def __init__(
        self, manifest_format: str, pg_restore: Tool, cancel: threading.Event | None
    ) -> None:
        self._format = manifest_format
        self._tail = b""
        self._tool: process.RunningTool | None = None
        self._reader: pipetee.PipeReader | None = None
        if manifest_format != "plain":
            argv = [str(pg_restore.path), "--file=/dev/null"]
            self._tool = process.start_tool(
                argv,
                env=local_tool_environment(),
                name="pg_restore",
                log=log,
                stdin=process.PIPE,
                stdout=process.DEVNULL,
                cancel=cancel,
            )
            assert self._tool.stdin is not None
            with contextlib.suppress(OSError):  # fewer wake-ups; optional
                fcntl.fcntl(self._tool.stdin.fileno(), fcntl.F_SETPIPE_SZ, pipetee.READ_CHUNK)

    def chunks(self, source: IO[bytes]) -> Iterator[memoryview]:
        """``source`` read to its end; each chunk is valid until the next is asked for."""
        sink = self._tool.stdin if self._tool is not None else None
        self._reader = pipetee.PipeReader(source, sink)
        for chunk in self._reader.chunks():
            if self._format == "plain":
                self._tail = (self._tail + bytes(chunk[-4096:]))[-4096:]
            yield chunk

    def finish(self) -> None:
        """The stream is complete: wait for the parse and raise what it found."""
        if self._tool is None:
            if PLAIN_TRAILER not in self._tail:
                raise BackupError("the dump is incomplete: pg_dump's end-of-dump line is missing")
            return
        if self._reader is not None:
            self._reader.close_sink()
        elif self._tool.stdin is not None:
            self._tool.stdin.close()
        tool, self._tool = self._tool, None
        _check_restore(tool.wait(), Path("the archive"))

    def close(self) -> None:
        """Abandon the check (the dump failed or was cancelled): stop pg_restore quietly."""
        if self._tool is not None:
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
