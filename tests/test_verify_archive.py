"""Data offsets for archives pg_dump wrote to a pipe: found where pg_dump itself puts them when
it writes to a file, for archive versions 1.14 (PostgreSQL 15) and 1.16 (18), in chunks of any
size; and pg_restore --jobs restores the patched archive to the same data."""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest

from pgwarden.archive.customtoc import POS_NOT_SET, POS_SET, OffsetFinder, read_toc
from tests.pgservers import PgServer
from tests.sampledata import make_rich_db, make_sample_db, table_fingerprints


def _dumps(server: PgServer, db: str, workdir: Path, *args: str) -> tuple[Path, Path]:
    pg_dump = str(server.bin_dir / "pg_dump")
    to_file, piped = workdir / f"{db}.file.dump", workdir / f"{db}.pipe.dump"
    subprocess.run([pg_dump, "-Fc", *args, "-f", str(to_file), server.dsn(db)], check=True)
    # through a pipe (a file as stdout would be seekable, and pg_dump would use it)
    done = subprocess.run(
        [pg_dump, "-Fc", *args, server.dsn(db)], check=True, stdout=subprocess.PIPE
    )
    piped.write_bytes(done.stdout)
    return to_file, piped


def _offsets(path: Path) -> dict[int, tuple[int, int]]:
    head = path.read_bytes()[: 4 << 20]
    toc = read_toc(head)
    return {
        e.dump_id: (
            head[e.offset_at],
            int.from_bytes(head[e.offset_at + 1 : e.offset_at + 1 + toc.off_size], "little"),
        )
        for e in toc.entries
    }


def _feed(path: Path, seed: int) -> OffsetFinder:
    finder = OffsetFinder()
    data = path.read_bytes()
    rng = random.Random(seed)
    i = 0
    while i < len(data):
        size = rng.choice((1, 7, 64, 4096, 1 << 16, 1 << 20))
        finder.feed(data[i : i + size])
        i += size
    return finder


@pytest.mark.parametrize("server_name", ["pg18", "pg15"])
def test_offsets_match_the_ones_pg_dump_writes_to_a_file(
    server_name: str, request: pytest.FixtureRequest, workdir: Path
) -> None:
    server: PgServer = request.getfixturevalue(server_name)
    if server_name == "pg18":
        make_rich_db(server, "offsets_db", large_objects=3)
    else:
        make_sample_db(server, "offsets_db", rows=2000, vectors=False)
    to_file, piped = _dumps(server, "offsets_db", workdir, "-Z0")
    truth = _offsets(to_file)
    assert {state for state, _ in _offsets(piped).values()} <= {POS_NOT_SET, 3}
    for seed in range(3):
        finder = _feed(piped, seed)
        assert finder.failed is None
        assert finder.found, "no data block found"
        for entry, start in finder.found:
            assert truth[entry.dump_id] == (POS_SET, start), entry
        data_entries = [e for e in finder.toc.entries if e.state == POS_NOT_SET]  # type: ignore[union-attr]
        blobs = [i for i, e in enumerate(data_entries) if e.desc == "BLOBS"]
        expected = blobs[0] + 1 if blobs else len(data_entries)
        assert len(finder.found) == expected


def test_a_patched_pipe_archive_restores_in_parallel(pg18: PgServer, workdir: Path) -> None:
    make_sample_db(pg18, "patched_src", rows=3000)
    _, piped = _dumps(pg18, "patched_src", workdir, "-Z0")
    finder = _feed(piped, 0)
    fd = os.open(piped, os.O_RDWR)
    try:
        assert finder.write(fd) == len(finder.found) > 0
    finally:
        os.close(fd)
    assert all(state != POS_NOT_SET for state, _ in _offsets(piped).values())
    pg18.create_database("patched_dst")
    subprocess.run(
        [
            str(pg18.bin_dir / "pg_restore"),
            "--jobs=3",
            "--exit-on-error",
            "-d",
            pg18.dsn("patched_dst"),
            str(piped),
        ],
        check=True,
    )
    assert table_fingerprints(pg18, "patched_dst") == table_fingerprints(pg18, "patched_src")


def test_archives_compressed_by_pg_dump_are_left_alone(pg18: PgServer, workdir: Path) -> None:
    make_sample_db(pg18, "gz_src", rows=100, vectors=False)
    _, piped = _dumps(pg18, "gz_src", workdir, "-Z1")
    finder = _feed(piped, 0)
    assert finder.failed == "compressed by pg_dump"
    assert finder.write(0) == 0
    other = OffsetFinder()
    other.feed(b"-- PostgreSQL database dump\n")
    assert other.failed is not None
