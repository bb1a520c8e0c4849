"""Backups written in zstd frames, drilled end to end on a real server: the frames are
decompressed in parallel into a spool that holds exactly what stock ``zstd -d`` gives (plus the
data offsets), the drill passes; a backup written as one unsized frame, as pgwarden did before
it wrote frames, still drills the same way; where the spool does not fit, the drill streams."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
import zstandard

from pgwarden.archive import zstdframes
from pgwarden.archive.customtoc import POS_SET, read_toc
from pgwarden.archive.manifest import Manifest
from pgwarden.archive.zstdframes import FrameDecoder
from pgwarden.restore.drill import VerifyRequest, run_verification
from pgwarden.restore.staging import checksum_and_stage, write_toc_head
from tests.helpers import Env, make_config, open_env, target_doc, target_env
from tests.pgservers import PgServer
from tests.sampledata import make_rich_db, make_sample_db


def _frames(path: Path) -> int:
    with FrameDecoder() as decoder:
        list(decoder.feed(path.read_bytes()))
        list(decoder.finish())
        return decoder.frames


def _stock_zstd(path: Path) -> bytes:
    return subprocess.run(
        ["zstd", "-q", "-dc", str(path)], check=True, stdout=subprocess.PIPE
    ).stdout


def _drill(env: Env) -> dict[str, object]:
    request = VerifyRequest(
        env.config.targets[0], env.config, env.catalog, env.storage, raise_on_failure=False
    )
    report = run_verification(request).as_dict()
    assert report["passed"], json.dumps(report, indent=2)
    return report


def test_a_backup_in_many_frames_is_spooled_in_parallel_and_drills(
    pg18: PgServer, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(zstdframes, "FRAME_INPUT", 64 << 10)  # many frames from a small dump
    make_rich_db(pg18, "frames_db")
    # the spool serves pg_restore --jobs loading the data (split_tables loads from a stream)
    env = target_env(workdir, pg18, "frames_db", verify={"split_tables": False})
    backup = env.backup()
    assert _frames(backup.path) >= 5
    plain = _stock_zstd(backup.path)

    manifest = Manifest.load(backup.manifest_path)
    staged = checksum_and_stage(manifest, backup.path, spool_dir=workdir)
    assert staged.spool is not None
    spooled = staged.spool.read_bytes()
    staged.remove_spool()
    toc = read_toc(spooled)
    assert len(spooled) == len(plain)
    assert spooled[toc.data_start :] == plain[toc.data_start :]
    patched = [e for e in toc.entries if e.desc == "TABLE DATA"]
    assert patched and all(spooled[e.offset_at] == POS_SET for e in patched)

    report = _drill(env)
    assert report["restore_mode"] == "spooled, pg_restore --jobs=2"
    assert any("data offsets recorded" in str(note) for note in report["notes"])  # type: ignore[attr-defined]


def test_a_backup_in_one_unsized_frame_still_drills(pg18: PgServer, workdir: Path) -> None:
    make_sample_db(pg18, "one_frame_db", rows=3000)
    env = target_env(workdir, pg18, "one_frame_db")
    backup = env.backup()
    # rewritten as one streamed frame without a size, as earlier pgwarden versions wrote it
    stream = zstandard.ZstdCompressor(level=1, write_checksum=True).compressobj()
    one = stream.compress(_stock_zstd(backup.path)) + stream.flush()
    backup.path.write_bytes(one)
    data = json.loads(backup.manifest_path.read_text())
    data["sha256"], data["size_bytes"] = hashlib.sha256(one).hexdigest(), len(one)
    backup.manifest_path.write_text(json.dumps(data, indent=2))
    assert _frames(backup.path) == 1

    report = _drill(env)  # split_tables: streamed, its table of contents read for --jobs
    assert report["restore_mode"] == (
        "streamed into pg_restore, post-data --jobs=2; data over 2 connections"
    )


def test_a_spool_that_does_not_fit_streams_into_a_serial_restore(
    pg18: PgServer, workdir: Path, small_disk: Path
) -> None:
    make_sample_db(pg18, "no_room_db", rows=200)
    doc = target_doc(pg18, "no_room_db", backup={"retries": 0}, verify={"split_tables": False})
    env = open_env(
        make_config(workdir, [doc], storage={"path": str(small_disk), "min_free_margin": 0})
    )
    env.backup()
    report = _drill(env)
    assert report["restore_mode"] == "streamed into a serial pg_restore"
    assert any("not enough space" in str(note) for note in report["notes"])  # type: ignore[attr-defined]
    assert not list(small_disk.rglob("*.partial"))


def test_the_table_of_contents_of_a_stream_is_a_restorable_archive_of_its_own(
    pg18: PgServer, workdir: Path
) -> None:
    """What a split drill gives ``pg_restore --jobs`` for the schema sections: the stream's
    head, no data, which stock ``pg_restore`` lists like the whole archive."""
    make_rich_db(pg18, "toc_head_db", large_objects=1)
    env = target_env(workdir, pg18, "toc_head_db")
    backup = env.backup()
    manifest = Manifest.load(backup.manifest_path)
    head = write_toc_head(manifest, backup.path, workdir)
    assert head is not None and head.name.endswith(".partial")
    assert head.stat().st_mode & 0o777 == 0o600
    plain = _stock_zstd(backup.path)
    assert plain.startswith(head.read_bytes()) and head.stat().st_size < len(plain) // 10
    pg_restore = str(pg18.bin_dir / "pg_restore")
    whole = workdir / "whole.dump"
    whole.write_bytes(plain)

    def listed(path: Path) -> list[str]:
        out = subprocess.run([pg_restore, "--list", str(path)], check=True, capture_output=True)
        return [line for line in out.stdout.decode().splitlines() if not line.startswith(";")]

    assert listed(head) == listed(whole)
    # not a custom archive of a version this pgwarden reads: no head, a serial post-data
    damaged = workdir / "damaged.dump.zst"
    damaged.write_bytes(zstandard.ZstdCompressor().compress(b"PGDMX" + plain[5:4096]))
    assert write_toc_head(manifest, damaged, workdir) is None
