"""The local storage backend on a real file system: atomic writes, modes, cleanup, a full disk."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from pgwarden.config import StorageConfig
from pgwarden.errors import BackupError
from pgwarden.storage import (
    LocalStorage,
    backup_name,
    localwrite,
    manifest_name,
    open_storage,
    parse_backup_name,
)

STARTED = datetime(2026, 11, 26, 3, 15, 0, tzinfo=UTC)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def leftovers(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if ".partial" in p.name)


@pytest.fixture(params=[0o000, 0o022, 0o277], ids=["umask0", "umask022", "umask277"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


@pytest.fixture
def storage(workdir: Path) -> LocalStorage:
    return LocalStorage(workdir / "backups")


# -- naming ---------------------------------------------------------------------------------


def test_backup_name_is_a_sortable_utc_stamp() -> None:
    assert backup_name(STARTED, "1a2b3c4d", "dump") == "20261126T031500Z-1a2b3c4d.dump"
    paris = STARTED.astimezone(timezone(timedelta(hours=1)))
    assert backup_name(paris, "1a2b3c4d", ".sql.gz") == "20261126T031500Z-1a2b3c4d.sql.gz"
    later = backup_name(STARTED + timedelta(seconds=1), "00000000", "dump")
    assert sorted([later, backup_name(STARTED, "ffffffff", "dump")])[1] == later


def test_backup_name_refuses_naive_and_odd_parts() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        backup_name(datetime(2026, 1, 1), "1a2b3c4d", "dump")
    with pytest.raises(ValueError, match="extension"):
        backup_name(STARTED, "1a2b3c4d", "../x")
    with pytest.raises(ValueError, match="short id"):
        backup_name(STARTED, "A/B", "dump")


def test_parse_backup_name_round_trips() -> None:
    parsed = parse_backup_name("20261126T031500Z-1a2b3c4d.sql.gz")
    assert parsed is not None
    assert (parsed.started, parsed.short_id, parsed.ext) == (STARTED, "1a2b3c4d", "sql.gz")
    assert parse_backup_name("20261126T031500Z-1a2b3c4d.dump.manifest.json") is None
    assert parse_backup_name("20261126T031500Z-1a2b3c4d.dump.partial") is None
    assert parse_backup_name("notes.txt") is None


def test_open_storage_builds_a_local_backend(workdir: Path) -> None:
    backend = open_storage(StorageConfig(path=workdir / "s"))
    assert isinstance(backend, LocalStorage)
    assert backend.location == str(workdir / "s")


# -- atomic writes and modes ----------------------------------------------------------------


def test_stream_publish_and_manifest_are_atomic_and_private(
    storage: LocalStorage, umask: int
) -> None:
    name = backup_name(STARTED, "1a2b3c4d", "dump")
    payload = [b"x" * 70_000, b"y" * 12_345, b""]
    with storage.writing("app", name) as partial:
        assert partial.path.name == name + ".partial"
        assert mode(partial.path) == 0o600
        result = storage.write_stream(partial, payload)
        final = storage.publish(partial)
    assert final == storage.root / "app" / name
    assert result.size_bytes == 82_345
    assert result.sha256 == hashlib.sha256(b"".join(payload)).hexdigest()
    assert final.read_bytes() == b"".join(payload)
    assert mode(final) == 0o600
    assert mode(storage.root) == 0o700
    assert mode(storage.root / "app") == 0o700

    document = {"id": "1a2b3c4d" * 4, "size": result.size_bytes}
    manifest = storage.write_manifest_atomic(
        "app", manifest_name(name), json.dumps(document).encode()
    )
    assert mode(manifest) == 0o600
    assert storage.read_manifest(manifest) == document
    storage.write_manifest_atomic("app", manifest_name(name), b'{"replaced": true}')
    assert storage.read_manifest(manifest) == {"replaced": True}
    assert storage.list_manifests("app") == [manifest]
    assert storage.list_manifests() == [manifest]
    assert storage.artifact_for(manifest) == final
    assert storage.list_orphans() == []
    assert leftovers(storage.root) == []
    assert storage.stored_bytes("app") == result.size_bytes + manifest.stat().st_size
    assert storage.free_bytes("app") > 0


def test_a_stream_is_written_out_while_it_comes(workdir: Path) -> None:
    """The write-out of each whole step is started as the file grows (the final fsync, still
    made, finds little left); a descriptor that cannot (a pipe) just skips it."""
    path = workdir / "stream.partial"
    step = 1 << 16
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        writer = localwrite.HashedWriter(fd)
        chunks = [bytes([n]) * 50_000 for n in range(5)]
        sha256 = writer.write(chunks)
        writeback = localwrite.EarlyWriteback(fd, step)
        writeback.written(3 * step + 100)
        assert writeback.started == 3 * step
        writeback.written(3 * step + 200)  # less than a step more: nothing new
        assert writeback.started == 3 * step
    finally:
        os.close(fd)
    assert writer.size == 250_000
    assert sha256 == hashlib.sha256(b"".join(chunks)).hexdigest()
    assert path.read_bytes() == b"".join(chunks)
    read_end, write_end = os.pipe()
    try:
        on_pipe = localwrite.EarlyWriteback(write_end, step)
        on_pipe.written(2 * step)
        assert on_pipe.started == 0
    finally:
        os.close(read_end)
        os.close(write_end)


def test_directory_dump_gets_private_modes_on_publish(storage: LocalStorage, umask: int) -> None:
    name = backup_name(STARTED, "dddd0001", "dir")
    with storage.writing("app", name, directory=True) as partial:
        assert partial.path.is_dir()
        assert mode(partial.path) == 0o700
        # what pg_dump does: files with its own modes, inside the directory
        (partial.path / "toc.dat").write_bytes(b"toc")
        (partial.path / "3001.dat.gz").write_bytes(b"data" * 100)
        os.chmod(partial.path / "toc.dat", 0o644)
        final = storage.publish(partial)
    assert final.is_dir()
    assert sorted(p.name for p in final.iterdir()) == ["3001.dat.gz", "toc.dat"]
    assert {mode(p) for p in final.iterdir()} == {0o600}
    assert mode(final) == 0o700
    assert storage.artifact_bytes(final) == 403
    assert leftovers(storage.root) == []


def test_a_failing_block_leaves_no_partial(storage: LocalStorage) -> None:
    name = backup_name(STARTED, "eeee0001", "dump")

    def dump() -> None:
        with storage.writing("app", name) as part:
            storage.write_stream(part, [b"half a dump"])
            raise RuntimeError("pg_dump died")

    with pytest.raises(RuntimeError, match="pg_dump died"):
        dump()
    assert leftovers(storage.root) == []
    assert not (storage.root / "app" / name).exists()

    def broken() -> Iterator[bytes]:
        yield b"some"
        raise RuntimeError("stream broke")

    partial = storage.open_partial("app", name)
    with pytest.raises(RuntimeError, match="stream broke"):
        storage.write_stream(partial, broken())
    assert leftovers(storage.root) == []


def test_existing_backups_are_never_overwritten(storage: LocalStorage) -> None:
    name = backup_name(STARTED, "ffff0001", "dump")
    with storage.writing("app", name) as partial:
        storage.write_stream(partial, [b"first"])
        storage.publish(partial)
    with pytest.raises(BackupError, match="already exists"):
        storage.open_partial("app", name)
    storage.open_partial("app", "other.dump")
    with pytest.raises(BackupError, match="already exists"):
        storage.open_partial("app", "other.dump")
    assert (storage.root / "app" / name).read_bytes() == b"first"


@pytest.mark.parametrize("target", ["", ".", "..", "a/b", "x" * 201, "-x"])
def test_unsafe_target_names_are_refused(storage: LocalStorage, target: str) -> None:
    with pytest.raises(BackupError, match="target name"):
        storage.target_dir(target)


@pytest.mark.parametrize("name", ["../escape", ".hidden", "x.partial", ""])
def test_unsafe_entry_names_are_refused(storage: LocalStorage, name: str) -> None:
    with pytest.raises(BackupError, match="invalid storage name"):
        storage.open_partial("app", name)


# -- start-up cleanup, orphans, deletion ----------------------------------------------------


def test_cleanup_partials_removes_only_leftovers(storage: LocalStorage) -> None:
    kept = backup_name(STARTED, "aaaa0001", "dump")
    with storage.writing("app", kept) as partial:
        storage.write_stream(partial, [b"kept"])
        storage.publish(partial)
    storage.write_manifest_atomic("app", manifest_name(kept), b"{}")
    crashed_file = storage.open_partial("app", backup_name(STARTED, "aaaa0002", "dump"))
    crashed_dir = storage.open_partial("db2", "20261126T031500Z-aaaa0003.dir", directory=True)
    (crashed_dir.path / "toc.dat").write_bytes(b"half")
    manifest_tmp = storage.root / "app" / "x.manifest.json.1234abcd.partial"
    manifest_tmp.write_bytes(b"{")

    removed = storage.cleanup_partials()

    assert sorted(removed) == sorted([crashed_file.path, crashed_dir.path, manifest_tmp])
    assert leftovers(storage.root) == []
    assert (storage.root / "app" / kept).read_bytes() == b"kept"
    assert storage.cleanup_partials() == []
    assert LocalStorage(storage.root / "missing").cleanup_partials() == []


def test_orphans_and_manifestless_artifacts(storage: LocalStorage) -> None:
    name = backup_name(STARTED, "bbbb0001", "dump")
    with storage.writing("app", name) as partial:
        storage.write_stream(partial, [b"no manifest yet"])
        storage.publish(partial)
    (storage.root / "app" / "README").write_text("not a backup")
    assert storage.list_orphans() == [storage.root / "app" / name]
    assert storage.list_manifests() == []


def test_delete_files_and_directories_inside_the_storage_only(
    storage: LocalStorage, workdir: Path
) -> None:
    name = backup_name(STARTED, "cccc0001", "dir")
    with storage.writing("app", name, directory=True) as partial:
        (partial.path / "toc.dat").write_bytes(b"toc")
        directory = storage.publish(partial)
    manifest = storage.write_manifest_atomic("app", manifest_name(name), b"{}")

    storage.delete(directory)
    storage.delete(manifest)
    storage.delete(manifest)  # already gone: not an error
    assert list((storage.root / "app").iterdir()) == []

    outside = workdir / "precious"
    outside.write_text("keep me")
    for path in (outside, storage.root / "app", storage.root, storage.root / "app" / "a" / "b"):
        with pytest.raises(BackupError, match="refusing to delete"):
            storage.delete(path)
    assert outside.read_text() == "keep me"
    assert (storage.root / "app").is_dir()


def test_unreadable_manifests_raise_backup_error(storage: LocalStorage) -> None:
    bad = storage.write_manifest_atomic("app", "x.dump.manifest.json", b"{not json")
    with pytest.raises(BackupError, match="unreadable"):
        storage.read_manifest(bad)
    storage.write_manifest_atomic("app", "y.dump.manifest.json", b"[1, 2]")
    with pytest.raises(BackupError, match="not a JSON object"):
        storage.read_manifest(storage.root / "app" / "y.dump.manifest.json")
    with pytest.raises(BackupError, match="not a manifest"):
        storage.artifact_for(storage.root / "app" / "x.dump")


# -- a full disk ----------------------------------------------------------------------------


@pytest.fixture
def tiny_fs(workdir: Path) -> Iterator[Path]:
    """A real 1 MB tmpfs mounted for the test (the tests run as root)."""
    mountpoint = workdir / "tiny"
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mountpoint)], check=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)


def test_a_full_disk_fails_clearly_and_leaves_nothing(tiny_fs: Path) -> None:
    storage = LocalStorage(tiny_fs / "backups")
    free = storage.free_bytes("app")
    assert 0 < free <= 1024 * 1024
    name = backup_name(STARTED, "dddd0002", "dump")
    chunks = (b"z" * 65_536 for _ in range(40))  # 2.5 MB into 1 MB

    with storage.writing("app", name) as partial:
        with pytest.raises(BackupError, match="no space left on device") as caught:
            storage.write_stream(partial, chunks)
        assert "the partial file was removed" in str(caught.value)
        assert isinstance(caught.value.__cause__, OSError)
    assert leftovers(storage.root) == []
    assert list((storage.root / "app").iterdir()) == []

    with pytest.raises(BackupError, match="no space left on device"):
        storage.write_manifest_atomic("app", manifest_name(name), b"m" * 2_000_000)
    assert list((storage.root / "app").iterdir()) == []
    assert storage.free_bytes("app") == free

    # the disk is usable again for something that fits
    small = backup_name(STARTED, "dddd0003", "dump")
    with storage.writing("app", small) as partial:
        storage.write_stream(partial, [b"fits"])
        assert storage.publish(partial).read_bytes() == b"fits"
