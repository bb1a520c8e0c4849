"""The local-directory storage backend.

Layout: ``<root>/<target>/<UTC stamp>-<short id>.<ext>`` beside ``<same>.manifest.json``.
Files are created 0600 and directories 0700 whatever the process umask (modes are set
explicitly after creation).  Every write is fsynced, and so is the directory after each rename
or removal, so that a published backup survives a power cut.  A backup stream is written out
while it comes (:mod:`pgwarden.storage.localwrite`), so its final fsync is short.

A directory-format dump being deleted is first renamed to ``NAME.partial`` (atomic), then
removed: a crash in the middle leaves a partial that start-up cleans, never a half-deleted
directory that still has its manifest.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pgwarden.config.names import STORAGE_NAME_MAX, target_name_problem
from pgwarden.errors import BackupError
from pgwarden.storage.base import (
    MANIFEST_SUFFIX,
    PARTIAL_SUFFIX,
    Partial,
    Storage,
    WriteResult,
    database_dirs,
    parse_backup_name,
    target_path,
)
from pgwarden.storage.localwrite import HashedWriter

FILE_MODE = 0o600
DIR_MODE = 0o700
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def fsync_dir(path: Path) -> None:
    """fsync a directory so that renames and removals in it are durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | _O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _describe(exc: OSError, action: str, path: Path) -> str:
    if exc.errno in {errno.ENOSPC, errno.EDQUOT}:
        cause = "no space left on device" if exc.errno == errno.ENOSPC else "disk quota exceeded"
    else:
        cause = exc.strerror or str(exc)
    return f"{action} {path}: {cause}"


def _make_private_dir(path: Path) -> None:
    """Create ``path`` (and missing parents) with mode 0700, umask-independent."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(directory, DIR_MODE)
        fsync_dir(directory.parent)


def _tree_bytes(path: Path) -> int:
    try:
        info = path.lstat()
    except FileNotFoundError:
        return 0
    if not stat.S_ISDIR(info.st_mode):
        return info.st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                continue
    return total


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


class LocalStorage(Storage):
    """Backups in a local directory tree rooted at ``root`` (created 0700 if missing)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).absolute()

    @property
    def location(self) -> str:
        return str(self.root)

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    # -- layout -----------------------------------------------------------------------------

    def target_dir(self, target: str) -> Path:
        path = target_path(self.root, target)
        if not path.is_dir():
            try:
                _make_private_dir(path)
            except OSError as exc:
                raise BackupError(_describe(exc, "cannot create storage directory", path)) from exc
        return path

    def _entry(self, target: str, name: str) -> Path:
        if (
            not name
            or "/" in name
            or "\0" in name
            or name.startswith(".")
            or name.endswith(PARTIAL_SUFFIX)
        ):
            raise BackupError(f"invalid storage name {name!r}")
        return self.target_dir(target) / name

    # -- writing artifacts ------------------------------------------------------------------

    def open_partial(self, target: str, name: str, *, directory: bool = False) -> Partial:
        final = self._entry(target, name)
        path = final.with_name(name + PARTIAL_SUFFIX)
        if final.exists() or final.is_symlink():
            raise BackupError(f"{final} already exists; refusing to overwrite a backup")
        try:
            if directory:
                os.mkdir(path, DIR_MODE)
                os.chmod(path, DIR_MODE)
            else:
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC
                fd = os.open(path, flags, FILE_MODE)
                try:
                    os.fchmod(fd, FILE_MODE)
                finally:
                    os.close(fd)
        except FileExistsError as exc:
            raise BackupError(
                f"{path} already exists: another job is writing it, or an interrupted one left "
                "it behind (removed at the next start-up)"
            ) from exc
        except OSError as exc:
            raise BackupError(_describe(exc, "cannot create", path)) from exc
        return Partial(target, name, path, final, directory)

    def write_stream(
        self, partial: Partial, chunks: Iterable[bytes | bytearray | memoryview]
    ) -> WriteResult:
        if partial.directory:
            raise BackupError(f"{partial.path} is a directory partial; pg_dump writes into it")
        writer: HashedWriter | None = None
        try:
            fd = os.open(partial.path, os.O_WRONLY | os.O_APPEND | _O_NOFOLLOW | _O_CLOEXEC)
            try:
                writer = HashedWriter(fd)
                sha256 = writer.write(chunks)  # fsynced, written out as it went
            finally:
                os.close(fd)
        except OSError as exc:
            self.discard(partial)
            message = _describe(exc, "cannot write", partial.path)
            size = writer.size if writer is not None else 0
            raise BackupError(
                f"{message} ({size} bytes written); the partial file was removed"
            ) from exc
        except BaseException:
            self.discard(partial)
            raise
        return WriteResult(writer.size, sha256)

    def publish(self, partial: Partial) -> Path:
        if partial.final.exists() or partial.final.is_symlink():
            self.discard(partial)
            raise BackupError(f"{partial.final} appeared while writing; not overwriting it")
        try:
            if partial.directory:
                self._sync_tree(partial.path)
            else:
                fd = os.open(partial.path, os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC)
                try:
                    os.fchmod(fd, FILE_MODE)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            os.rename(partial.path, partial.final)
            fsync_dir(partial.final.parent)
        except OSError as exc:
            self.discard(partial)
            message = _describe(exc, "cannot publish", partial.path)
            raise BackupError(f"{message}; the partial was removed") from exc
        return partial.final

    @staticmethod
    def _sync_tree(top: Path) -> None:
        """Set modes (0600 files, 0700 directories) and fsync everything below ``top``."""
        for root, dirs, files in os.walk(top, topdown=False):
            for name in files:
                fd = os.open(os.path.join(root, name), os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC)
                try:
                    os.fchmod(fd, FILE_MODE)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            for name in dirs:
                os.chmod(os.path.join(root, name), DIR_MODE)
            os.chmod(root, DIR_MODE)
            fsync_dir(Path(root))

    def discard(self, partial: Partial) -> None:
        try:
            _remove(partial.path)
            fsync_dir(partial.path.parent)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise BackupError(_describe(exc, "cannot remove", partial.path)) from exc

    # -- manifests --------------------------------------------------------------------------

    def write_manifest_atomic(self, target: str, name: str, data: bytes) -> Path:
        final = self._entry(target, name)
        tmp = final.with_name(f"{name}.{secrets.token_hex(4)}{PARTIAL_SUFFIX}")
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC
            fd = os.open(tmp, flags, FILE_MODE)
            try:
                os.fchmod(fd, FILE_MODE)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, final)
            fsync_dir(final.parent)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            message = _describe(exc, "cannot write manifest", final)
            raise BackupError(f"{message}; nothing was left behind") from exc
        return final

    def _target_dirs(self, target: str | None) -> list[Path]:
        if target is not None:
            path = target_path(self.root, target)
            return [path] if path.is_dir() else []
        if not self.root.is_dir():
            return []
        tops = [
            Path(entry.path)
            for entry in os.scandir(self.root)
            # a target directory may be a symlink (one project's backups on another disk):
            # followed here as it is when writing, so prunes and sweeps see what was written
            if entry.is_dir() and not entry.name.endswith(PARTIAL_SUFFIX)
        ]
        return sorted(tops + [sub for top in tops for sub in database_dirs(top)])

    def list_manifests(self, target: str | None = None) -> list[Path]:
        found = [
            Path(entry.path)
            for directory in self._target_dirs(target)
            for entry in os.scandir(directory)
            if entry.name.endswith(MANIFEST_SUFFIX) and entry.is_file(follow_symlinks=False)
        ]
        return sorted(found, key=lambda p: (p.name, str(p)))

    def read_manifest(self, path: Path) -> dict[str, Any]:
        try:
            document = json.loads(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise BackupError(f"manifest {path} is unreadable: {exc}") from exc
        if not isinstance(document, dict):
            raise BackupError(f"manifest {path} is not a JSON object")
        return document

    def artifact_for(self, manifest: Path) -> Path:
        if not manifest.name.endswith(MANIFEST_SUFFIX):
            raise BackupError(f"{manifest} is not a manifest (*{MANIFEST_SUFFIX})")
        return manifest.with_name(manifest.name.removesuffix(MANIFEST_SUFFIX))

    def list_orphans(self, target: str | None = None) -> list[Path]:
        orphans: list[Path] = []
        for directory in self._target_dirs(target):
            names = {entry.name for entry in os.scandir(directory)}
            orphans.extend(
                directory / name
                for name in names
                if parse_backup_name(name) is not None and name + MANIFEST_SUFFIX not in names
            )
        return sorted(orphans)

    # -- removal and accounting -------------------------------------------------------------

    def delete(self, path: Path) -> None:
        path = Path(path).absolute()
        root = self.root.resolve()
        # <root>/<target>/<name>: the target directory may be a symlink (followed as when
        # writing), but it must be a target's directory right under the root, or an existing
        # database directory (not a link) in one: <root>/<target>/<database>/<name>
        directory = path.parent
        above = directory.parent
        nested = (
            above.parent.resolve() == root and above.is_dir() and directory in database_dirs(above)
        )
        if (
            not (directory.parent.resolve() == root or nested)
            or target_name_problem(directory.name, STORAGE_NAME_MAX) is not None
            or path.name in {"", ".", ".."}
        ):
            raise BackupError(f"refusing to delete {path}: not a backup in storage {self.root}")
        parent = directory.resolve()
        target_path = parent / path.name
        try:
            if target_path.is_dir() and not target_path.is_symlink():
                doomed = target_path.with_name(target_path.name + PARTIAL_SUFFIX)
                os.rename(target_path, doomed)
                fsync_dir(parent)
                shutil.rmtree(doomed)
            else:
                target_path.unlink(missing_ok=True)
            fsync_dir(parent)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise BackupError(_describe(exc, "cannot delete", target_path)) from exc

    def free_bytes(self, target: str) -> int:
        directory = self.target_dir(target)
        try:
            info = os.statvfs(directory)
        except OSError as exc:
            raise BackupError(_describe(exc, "cannot stat file system of", directory)) from exc
        return info.f_bavail * info.f_frsize

    def stored_bytes(self, target: str) -> int:
        directory = target_path(self.root, target)
        return _tree_bytes(directory.resolve() if directory.is_symlink() else directory)

    def artifact_bytes(self, path: Path) -> int:
        return _tree_bytes(path)

    def list_partials(self) -> list[Path]:
        return sorted(
            Path(entry.path)
            for directory in self._target_dirs(None)
            for entry in os.scandir(directory)
            if entry.name.endswith(PARTIAL_SUFFIX)
        )

    def remove_partial(self, path: Path) -> None:
        try:
            _remove(path)
            fsync_dir(path.parent)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise BackupError(_describe(exc, "cannot remove leftover", path)) from exc

    def cleanup_partials(self) -> list[Path]:
        removed = self.list_partials()
        for path in removed:
            try:
                _remove(path)
            except OSError as exc:
                raise BackupError(_describe(exc, "cannot remove leftover", path)) from exc
        for directory in sorted({path.parent for path in removed}):
            fsync_dir(directory)
        return removed
