"""Per-backup locks: restores and drills share a backup, retention deletes it alone.

This module owns the lock files under ``<state_dir>/locks/`` (directory 0700, files 0600, one
``<backup id>.lock`` per backup) and the ``fcntl.flock`` protocol on them.  ``flock`` locks
belong to an open file description, so they exclude each other across processes (the daemon,
a one-shot ``pgwarden restore``) *and* across threads of one process.  The kernel drops a lock
when its holder dies: nothing is ever left locked by a crash.

API -- everything reading a backup's artifact for longer than an instant (restore drills,
restores) holds a *shared* lock; retention takes an *exclusive* one, without waiting, before
it deletes anything, and keeps a backup it cannot lock "in use" until the next prune::

    locks = BackupLocks(config.daemon.state_dir)

    with locks.shared(record.id, timeout=30):    # BusyError if a deletion holds it longer
        record = catalog.get_backup(record.id)   # re-check: a prune may have deleted it
        if record.status != "complete": ...      # just before we got the lock
        ... restore / checksum the artifact ...

    with locks.try_exclusive(record.id) as lock:  # never waits
        if lock.held:
            ... delete the artifact, the manifest, mark the row ...
            lock.discard()                        # remove the lock file on release

    with locks.manifest_update(record.id, timeout=30):
        ... read, change and atomically rewrite NAME.manifest.json ...

``manifest_update`` is a separate, short exclusive lock (``<id>.manifest.lock``) for the
read-modify-write of a manifest (a drill appending its result, ``pgwarden pin`` setting
``pinned``) so that two writers never lose each other's change; it does not conflict with
``shared``.

``run`` is the *run lock* of one backup run (``<artifact name>.run.lock``): taken before the
run writes its catalog row and its ``NAME.partial``, held until both are final, so that "the
run lock is free" means "its owner is dead".  A later run (a one-shot command, the daemon at
start-up) reaps exactly the partials and ``running`` rows whose run lock it can take
(``try_run``, never waiting); see :mod:`pgwarden.backup.reap`.

Lock files of deleted backups are removed by the deleter while it still holds the exclusive
lock; an acquirer checks, after ``flock`` returns, that the file it locked is still the one at
the path (same inode) and starts again otherwise, so a removed lock file never splits holders.
"""

from __future__ import annotations

import fcntl
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pgwarden.errors import BusyError

LOCK_DIR_NAME = "locks"
_ID_RE = re.compile(r"^[0-9a-f]{32}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_POLL_S = 0.05
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class ExclusiveLock:
    """What :meth:`BackupLocks.try_exclusive` yields: ``held`` says whether it got the lock."""

    def __init__(self, path: Path, held: bool) -> None:
        self.path = path
        self.held = held
        self._discard = False

    def discard(self) -> None:
        """Remove the lock file when the lock is released (the backup is gone)."""
        if not self.held:
            raise RuntimeError("only the holder of the lock may discard it")
        self._discard = True

    @property
    def discarded(self) -> bool:
        return self._discard


class BackupLocks:
    """The lock files of one pgwarden installation (see the module docstring)."""

    def __init__(self, state_dir: Path | str) -> None:
        self.directory = Path(state_dir) / LOCK_DIR_NAME

    def __repr__(self) -> str:
        return f"BackupLocks({str(self.directory)!r})"

    def path_for(self, backup_id: str, suffix: str = ".lock") -> Path:
        if not _ID_RE.match(backup_id):
            raise ValueError(f"backup id must be 32 lowercase hex digits (got {backup_id!r})")
        return self.directory / f"{backup_id}{suffix}"

    @contextmanager
    def shared(self, backup_id: str, *, timeout: float | None = None) -> Iterator[None]:
        """Hold a shared lock on ``backup_id`` for the block; wait at most ``timeout``
        seconds (``None``: as long as it takes) for a deletion to finish."""
        path = self.path_for(backup_id)
        fd = self._acquire(path, fcntl.LOCK_SH, timeout)
        if fd is None:
            raise BusyError(f"backup {backup_id[:8]} is being deleted (lock {path} is held)")
        try:
            yield
        finally:
            os.close(fd)

    @contextmanager
    def try_exclusive(self, backup_id: str) -> Iterator[ExclusiveLock]:
        """Try once to lock ``backup_id`` exclusively; the yielded lock's ``held`` is false
        when someone holds it (a restore or a drill is reading the backup)."""
        with self._try_exclusive_at(self.path_for(backup_id)) as lock:
            yield lock

    def in_use(self, backup_id: str) -> bool:
        """Whether someone holds a lock on ``backup_id`` right now (a snapshot, for reports)."""
        with self.try_exclusive(backup_id) as lock:
            return not lock.held

    @contextmanager
    def manifest_update(self, backup_id: str, *, timeout: float | None = 30.0) -> Iterator[None]:
        """Hold the exclusive manifest lock of ``backup_id`` while rewriting its manifest."""
        path = self.path_for(backup_id, ".manifest.lock")
        busy = f"the manifest of backup {backup_id[:8]} is being updated"
        with self._exclusive_at(path, timeout, busy, remove=False):
            yield

    def run_path(self, name: str) -> Path:
        if not _NAME_RE.match(name):
            raise ValueError(f"not a backup artifact name: {name!r}")
        return self.directory / f"{name}.run.lock"

    @contextmanager
    def run(self, name: str, *, timeout: float = 5.0) -> Iterator[None]:
        """Hold the run lock of the backup run writing artifact ``name`` for the block; the
        lock file is removed on release."""
        path = self.run_path(name)
        with self._exclusive_at(path, timeout, f"the run lock {path} is held by another run"):
            yield

    @contextmanager
    def try_run(self, name: str) -> Iterator[ExclusiveLock]:
        """Try once to take the run lock of artifact ``name``; ``held`` is false while the
        run that owns it is alive."""
        with self._try_exclusive_at(self.run_path(name)) as lock:
            yield lock

    # -- the protocol ----------------------------------------------------------------------

    @contextmanager
    def _try_exclusive_at(self, path: Path) -> Iterator[ExclusiveLock]:
        """One attempt at ``path``'s exclusive lock; the file goes if the holder discards it."""
        fd = self._acquire(path, fcntl.LOCK_EX, 0.0)
        lock = ExclusiveLock(path, fd is not None)
        try:
            yield lock
        finally:
            if fd is not None:
                if lock.discarded:
                    path.unlink(missing_ok=True)
                os.close(fd)

    @contextmanager
    def _exclusive_at(
        self, path: Path, timeout: float | None, busy: str, *, remove: bool = True
    ) -> Iterator[None]:
        """``path``'s exclusive lock for the block (BusyError after ``timeout``); the file is
        removed on release unless ``remove`` is false."""
        fd = self._acquire(path, fcntl.LOCK_EX, timeout)
        if fd is None:
            raise BusyError(busy)
        try:
            yield
        finally:
            if remove:
                path.unlink(missing_ok=True)
            os.close(fd)

    def _open(self, path: Path) -> int:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        flags = os.O_RDONLY | os.O_CREAT | _O_CLOEXEC | _O_NOFOLLOW
        return os.open(path, flags, 0o600)

    def _acquire(self, path: Path, mode: int, timeout: float | None) -> int | None:
        """An fd holding ``mode`` on the file now at ``path``, or ``None`` on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            fd = self._open(path)
            try:
                if not _flock(fd, mode, deadline):
                    os.close(fd)
                    return None
                if _same_file(fd, path):
                    return fd
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)  # the deleter removed the file while we waited: lock the new one


def _flock(fd: int, mode: int, deadline: float | None) -> bool:
    if deadline is None:
        fcntl.flock(fd, mode)
        return True
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(_POLL_S, remaining))
        else:
            return True


def _same_file(fd: int, path: Path) -> bool:
    try:
        current = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (current.st_dev, current.st_ino)
