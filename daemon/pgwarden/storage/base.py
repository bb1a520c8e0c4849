"""The storage interface: where backups and their manifests live, written atomically.

A backend stores, per target, backup *artifacts* (a file, or a directory for ``pg_dump
--format=directory``) each beside its manifest ``NAME.manifest.json``.  The storage holds the
truth: a backup exists when its artifact and its complete manifest exist, and the catalog can be
rebuilt from the manifests alone.

The write protocol is the same for artifacts and manifests (DESIGN.md, "Atomic publish"):

1. write ``NAME.partial`` (:meth:`Storage.open_partial` creates it with restrictive modes),
2. fsync it, rename it to ``NAME``, fsync the directory (:meth:`Storage.publish`),
3. write the manifest the same way (:meth:`Storage.write_manifest_atomic`).

Anything still called ``*.partial`` was interrupted and is removed by
:meth:`Storage.cleanup_partials` at start-up.  A crash between steps 2 and 3 leaves an artifact
without a manifest, which is not a backup; backends report such orphans in
:meth:`Storage.list_orphans` so that retention can remove them.

The interface is path-based because the first backend is a local directory; an S3-compatible
backend will stage artifacts in a local spool directory and upload them in ``publish``.

This module also owns backup naming: ``<UTC stamp>-<short id>.<ext>``, e.g.
``20261126T031500Z-1a2b3c4d.dump``, which sorts chronologically by name.
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pgwarden.config.names import STORAGE_NAME_MAX, SUB_TARGET_SEP, target_name_problem
from pgwarden.errors import BackupError

PARTIAL_SUFFIX = ".partial"
MANIFEST_SUFFIX = ".manifest.json"
_STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
_NAME_RE = re.compile(r"^(?P<stamp>\d{8}T\d{6}Z)-(?P<short>[0-9a-z]{4,32})\.(?P<ext>[0-9a-z.]+)$")
_EXT_RE = re.compile(r"^[0-9a-z]+(\.[0-9a-z]+)*$")


def backup_name(started: datetime, short_id: str, ext: str) -> str:
    """The artifact name for a backup: ``20261126T031500Z-1a2b3c4d.dump``.

    ``started`` must be timezone-aware (it is converted to UTC); ``ext`` is given without the
    leading dot (``dump``, ``sql.gz``, ``dir``).  Names sort chronologically.
    """
    if started.tzinfo is None or started.utcoffset() is None:
        raise ValueError("backup_name needs a timezone-aware datetime")
    ext = ext.removeprefix(".")
    if not _EXT_RE.match(ext):
        raise ValueError(f"invalid backup extension {ext!r}")
    if not re.fullmatch(r"[0-9a-z]{4,32}", short_id):
        raise ValueError(f"invalid short id {short_id!r}: 4-32 lowercase letters or digits")
    return f"{started.astimezone(UTC).strftime(_STAMP_FORMAT)}-{short_id}.{ext}"


@dataclass(frozen=True)
class ParsedName:
    """The parts of a backup name produced by :func:`backup_name`."""

    started: datetime
    short_id: str
    ext: str


def parse_backup_name(name: str) -> ParsedName | None:
    """The parts of a backup artifact name, or ``None`` if ``name`` is not one."""
    match = _NAME_RE.match(name)
    if match is None or name.endswith((MANIFEST_SUFFIX, PARTIAL_SUFFIX)):
        return None
    try:
        started = datetime.strptime(match["stamp"], _STAMP_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None
    return ParsedName(started, match["short"], match["ext"])


def manifest_name(artifact_name: str) -> str:
    """The manifest's name for an artifact: ``NAME`` -> ``NAME.manifest.json``."""
    return artifact_name + MANIFEST_SUFFIX


def check_target_name(target: str) -> str:
    """Return ``target`` if it is safe as one directory name, else raise :class:`BackupError`.

    The rule is config validation's (:func:`pgwarden.config.names.target_name_problem`).
    """
    if target_name_problem(target, STORAGE_NAME_MAX) is not None:
        raise BackupError(
            f"target name {target!r} cannot be used as a storage directory "
            "(letters, digits, '_', '-', '.', not first '.' or '-'; at most 200 characters)"
        )
    return target


def database_dirs(target_dir: Path) -> list[Path]:
    """A whole-server target's ``<target>/<database>`` directories (not backup directories,
    published or being written)."""
    return [
        Path(e.path)
        for e in os.scandir(target_dir)
        if e.is_dir(follow_symlinks=False)
        and parse_backup_name(e.name) is None
        and not e.name.endswith(PARTIAL_SUFFIX)
        and target_name_problem(e.name, STORAGE_NAME_MAX) is None
    ]


GLOBALS_PREFIX, GLOBALS_SUFFIX = "globals-", ".sql"


def globals_name(at: datetime, short_id: str) -> str:
    """A whole-server run's globals file in ``<target>/``:
    ``globals-20261203T031500Z-1a2b3c4d.sql`` (two runs in one second never share one)."""
    return (
        f"{GLOBALS_PREFIX}{at.astimezone(UTC).strftime(_STAMP_FORMAT)}-{short_id}{GLOBALS_SUFFIX}"
    )


def parse_globals_name(name: str) -> datetime | None:
    """When the globals file ``name`` was written, or ``None`` if it is not one."""
    if not (name.startswith(GLOBALS_PREFIX) and name.endswith(GLOBALS_SUFFIX)):
        return None
    stamp = name.removeprefix(GLOBALS_PREFIX).removesuffix(GLOBALS_SUFFIX).split("-")[0]
    try:
        return datetime.strptime(stamp, _STAMP_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def target_path(root: Path, target: str) -> Path:
    """``root/<target>``; or ``root/<target>/<database>`` for a whole-server target's database
    (``target`` ``"<target>/<database>"``), only under an existing target directory: a run
    creates it first (the globals), and a name with a ``/`` never creates two levels at once."""
    parent, sep, database = target.partition(SUB_TARGET_SEP)
    if sep and (root / check_target_name(parent)).is_dir():
        return root / parent / check_target_name(database)
    return root / check_target_name(target)


@dataclass(frozen=True)
class Partial:
    """An artifact being written: ``path`` (``NAME.partial``) becomes ``final`` on publish.

    ``directory`` is true for ``pg_dump --format=directory`` output: ``path`` is then an empty
    directory that pg_dump fills.  Otherwise ``path`` is an empty file, created with mode 0600,
    that the caller either streams into (:meth:`Storage.write_stream`) or names with
    ``pg_dump --file`` (pg_dump truncates an existing file and keeps its mode).
    """

    target: str
    name: str
    path: Path
    final: Path
    directory: bool = False


@dataclass(frozen=True)
class WriteResult:
    """What :meth:`Storage.write_stream` wrote: byte count and hex SHA-256."""

    size_bytes: int
    sha256: str


class Storage(ABC):
    """Where backups live.  Every method is safe to call from several threads for different
    artifacts; callers serialise work per target (one job per target at a time)."""

    @property
    @abstractmethod
    def location(self) -> str:
        """A human-readable description of the storage (a path, a bucket URL)."""

    @abstractmethod
    def target_dir(self, target: str) -> Path:
        """The directory holding ``target``'s backups, created (mode 0700) if missing."""

    def target_of(self, directory: Path) -> str:
        """The target whose backups ``directory`` (as listed, under :attr:`location`) holds:
        its name, or ``<target>/<database>`` for a whole-server target's database."""
        root = Path(self.location)
        if directory.parent != root and directory.parent.parent == root:
            return f"{directory.parent.name}/{directory.name}"
        return directory.name

    @abstractmethod
    def open_partial(self, target: str, name: str, *, directory: bool = False) -> Partial:
        """Create ``NAME.partial`` (empty file 0600, or empty directory 0700) for writing.

        Raises :class:`BackupError` if ``NAME`` or ``NAME.partial`` already exists.
        """

    @abstractmethod
    def write_stream(
        self, partial: Partial, chunks: Iterable[bytes | bytearray | memoryview]
    ) -> WriteResult:
        """Append ``chunks`` to a file partial and fsync it; return size and SHA-256.

        On any error (a full disk included) the partial is removed and :class:`BackupError`
        raised with a message naming the cause.
        """

    @abstractmethod
    def publish(self, partial: Partial) -> Path:
        """fsync the partial (every file of a directory), rename it to its final name, fsync
        the target directory; return the final path.  The partial is removed on failure."""

    @abstractmethod
    def discard(self, partial: Partial) -> None:
        """Remove a partial (after a failed or cancelled dump).  Missing is not an error."""

    @abstractmethod
    def write_manifest_atomic(self, target: str, name: str, data: bytes) -> Path:
        """Write (or replace) manifest ``name`` atomically: partial, fsync, rename, fsync dir."""

    @abstractmethod
    def list_manifests(self, target: str | None = None) -> list[Path]:
        """Manifest paths of ``target`` (or of every target), oldest first by name."""

    @abstractmethod
    def read_manifest(self, path: Path) -> dict[str, Any]:
        """The parsed manifest at ``path``; :class:`BackupError` if unreadable or not JSON."""

    @abstractmethod
    def artifact_for(self, manifest: Path) -> Path:
        """The artifact path that manifest ``NAME.manifest.json`` describes (``NAME``)."""

    @abstractmethod
    def list_orphans(self, target: str | None = None) -> list[Path]:
        """Artifacts without a manifest (a crash between publish and manifest write)."""

    @abstractmethod
    def delete(self, path: Path) -> None:
        """Delete an artifact (file or directory) or a manifest inside the storage, durably.

        Delete the artifact before its manifest: a manifest whose artifact is missing is
        recognisable (the catalog marks it deleted), an artifact without manifest is an orphan.
        Missing is not an error; a path outside the storage raises :class:`BackupError`.
        """

    @abstractmethod
    def free_bytes(self, target: str) -> int:
        """Bytes available to pgwarden where ``target``'s backups are written."""

    @abstractmethod
    def stored_bytes(self, target: str) -> int:
        """Bytes used by everything stored for ``target`` (artifacts and manifests)."""

    @abstractmethod
    def artifact_bytes(self, path: Path) -> int:
        """Size of an artifact: a file's size, or the sum of a dump directory's files."""

    @abstractmethod
    def cleanup_partials(self) -> list[Path]:
        """Remove every leftover ``*.partial`` (files and directories); return what was removed."""

    @abstractmethod
    def list_partials(self) -> list[Path]:
        """Every ``*.partial`` in the targets' directories (live ones included)."""

    @abstractmethod
    def remove_partial(self, path: Path) -> None:
        """Remove one ``*.partial`` that :meth:`list_partials` returned (gone already: fine)."""

    @contextmanager
    def writing(self, target: str, name: str, *, directory: bool = False) -> Iterator[Partial]:
        """``open_partial`` as a context manager that discards the partial if the block raises
        or does not publish it."""
        handle = self.open_partial(target, name, directory=directory)
        try:
            yield handle
        finally:
            if handle.path.exists() or handle.path.is_symlink():
                self.discard(handle)
