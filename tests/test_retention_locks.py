"""Per-backup locks: real flock on real files, across threads and processes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pgwarden.errors import BusyError
from pgwarden.storage.locks import BackupLocks

A = "a" * 32
B = "b" * 32


def test_shared_locks_coexist_and_keep_deletion_out(tmp_path: Path) -> None:
    locks = BackupLocks(tmp_path)
    with locks.shared(A), locks.shared(A):
        with locks.try_exclusive(A) as lock:
            assert not lock.held
        with locks.try_exclusive(B) as other:
            assert other.held
        assert locks.in_use(A)
    with locks.try_exclusive(A) as lock:
        assert lock.held
        with locks.try_exclusive(A) as second:
            assert not second.held  # exclusive even within one process
    assert not locks.in_use(A)
    assert oct(locks.directory.stat().st_mode & 0o777) == "0o700"
    assert oct(locks.path_for(A).stat().st_mode & 0o777) == "0o600"


def test_shared_waits_for_a_deletion_then_times_out(tmp_path: Path) -> None:
    locks = BackupLocks(tmp_path)
    with locks.try_exclusive(A) as lock:
        assert lock.held
        started = time.monotonic()
        with pytest.raises(BusyError, match="being deleted"), locks.shared(A, timeout=0.3):
            pass
        assert time.monotonic() - started >= 0.3


def test_a_discarded_lock_file_never_splits_holders(tmp_path: Path) -> None:
    """A reader waiting on a lock file the deleter removes ends up locking the live file."""
    locks = BackupLocks(tmp_path)
    acquired = threading.Event()
    release = threading.Event()

    def reader() -> None:
        with locks.shared(A, timeout=10):
            acquired.set()
            release.wait(10)

    with locks.try_exclusive(A) as lock:
        assert lock.held
        thread = threading.Thread(target=reader)
        thread.start()
        time.sleep(0.2)
        assert not acquired.is_set()
        lock.discard()
    assert acquired.wait(5)
    try:
        assert locks.path_for(A).exists()  # recreated by the reader
        with locks.try_exclusive(A) as again:
            assert not again.held  # the reader holds the file that is at the path
    finally:
        release.set()
        thread.join()
    with locks.try_exclusive(A) as last:
        assert last.held
        last.discard()
    assert not locks.path_for(A).exists()


def test_a_lock_held_by_another_process_and_released_by_its_death(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from pgwarden.storage.locks import BackupLocks\n"
        f"with BackupLocks({str(tmp_path)!r}).shared({A!r}):\n"
        "    print('held', flush=True)\n"
        "    sys.stdin.read()\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "held"
            assert BackupLocks(tmp_path).in_use(A)
            holder.kill()  # no clean exit: the kernel drops the lock
            holder.wait(10)
            assert not BackupLocks(tmp_path).in_use(A)
        finally:
            if holder.poll() is None:
                holder.kill()


def test_manifest_updates_are_serialised_but_do_not_conflict_with_readers(
    tmp_path: Path,
) -> None:
    locks = BackupLocks(tmp_path)
    with (
        locks.shared(A),
        locks.manifest_update(A),
        pytest.raises(BusyError, match="manifest"),
        locks.manifest_update(A, timeout=0.1),
    ):
        pass
    with locks.manifest_update(A, timeout=0.1):
        pass


def test_only_backup_ids_name_lock_files(tmp_path: Path) -> None:
    locks = BackupLocks(tmp_path)
    for bad in ("../../etc/passwd", "A" * 32, "abc", ""):
        with pytest.raises(ValueError, match="32 lowercase hex"):
            locks.path_for(bad)
    with locks.try_exclusive(A) as lock:
        lock.discard()
    assert not locks.path_for(A).exists()
    with (
        locks.shared(A),
        locks.try_exclusive(A) as busy,
        pytest.raises(RuntimeError, match="only the holder"),
    ):
        busy.discard()
    assert os.listdir(locks.directory) == [f"{A}.lock"]
