"""Hashing a backup's bytes from disk: one artifact file, or a directory archive file by file.

:func:`hashing` yields a file's chunks while it hashes and counts them, so that a reader (the
read-back after a backup, the drill's staging) gets the checksum in the same pass.  A directory
archive's digest is one SHA-256 over its sorted ``name sha256`` listing.  Plain dumps end with
:data:`PLAIN_TRAILER`: a dump without it was cut short.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pgwarden.archive import compress
from pgwarden.errors import BackupError

PLAIN_TRAILER = b"PostgreSQL database dump complete"


@dataclass(frozen=True)
class Digest:
    size_bytes: int
    sha256: str
    files: dict[str, str]


def hashing(path: Path, digest: hashlib._Hash, counter: list[int]) -> Iterator[bytes]:
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
        one = file_digest(item)
        files[str(item.relative_to(path))] = one.sha256
        size += one.size_bytes
    listing = "".join(f"{name} {sha}\n" for name, sha in sorted(files.items()))
    return Digest(size, hashlib.sha256(listing.encode()).hexdigest(), files)


def file_digest(path: Path) -> Digest:
    sha = hashlib.sha256()
    counter = [0]
    for _ in hashing(path, sha, counter):
        pass
    return Digest(counter[0], sha.hexdigest(), {})
