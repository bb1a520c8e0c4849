"""customframes: the in-line framing check over real archives pg_dump 15 and 18 wrote to a pipe.

Whole archives pass in any chunking; every truncation and every damaged header is flagged,
compared with what ``pg_restore --file=/dev/null`` (the check it replaces) flags on the same
bytes; archives the check does not know fall back to pg_restore in :class:`StreamCheck`."""

from __future__ import annotations

import random
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from pgwarden.archive.customframes import Framing, FramingCheck
from pgwarden.archive.customtoc import POS_NOT_SET, read_toc
from pgwarden.backup import readback
from pgwarden.errors import BackupError
from pgwarden.pg.binaries import Tool, find_tool
from tests.helpers import pipe_with
from tests.pgservers import PgServer

SEED = random.randrange(1 << 30)
DB = "frames"

_SCHEMA = """
CREATE TABLE empty_one (id int);
CREATE TABLE every_byte (id int, t text);
INSERT INTO every_byte SELECT 1, string_agg(chr(n), '' ORDER BY n) FROM generate_series(1, 255) n;
INSERT INTO every_byte VALUES (2, E'tab\\there\\nnew line\\\\back\\rslash');
INSERT INTO every_byte SELECT 3 + g, repeat('z', g) FROM generate_series(250, 260) g;
INSERT INTO every_byte SELECT 1000 + g, repeat('w', g) FROM generate_series(65534, 65537) g;
CREATE TABLE blobs (id int, b bytea, j jsonb);
INSERT INTO blobs SELECT g, decode(repeat('00', g) || md5(g::text) || repeat('00ff', g), 'hex'),
    jsonb_build_object('g', g, 's', repeat('x', g % 50)) FROM generate_series(1, 100) g;
SELECT lo_from_bytea(0, '');
SELECT lo_from_bytea(0, decode(repeat('00', 20000), 'hex'));
SELECT lo_from_bytea(0, decode(repeat('0001000000000000', 5000), 'hex'));
"""
#: PostgreSQL 17 and later write one large-object block per 1000 objects; 15 writes one in all
_MANY_OBJECTS = (
    "SELECT lo_from_bytea(0, convert_to(g::text, 'SQL_ASCII')) FROM generate_series(1, {}) g"
)


@dataclass(frozen=True)
class Archive:
    server: PgServer
    data: bytes
    framing: Framing


def _build(server: PgServer) -> bytes:
    server.drop_database(DB)
    server.execute(f"CREATE DATABASE {DB} ENCODING 'SQL_ASCII' LOCALE 'C' TEMPLATE template0")
    with server.connect(DB) as conn:
        for statement in _SCHEMA.split(";\n"):
            if statement.strip():
                conn.execute(statement)  # type: ignore[call-overload]
        conn.execute(_MANY_OBJECTS.format(1001 if server.major >= 17 else 20))  # type: ignore[call-overload]
        for i in range(40):  # many tables
            rows = f"SELECT g AS id FROM generate_series(1, {i}) g"
            conn.execute(f"CREATE TABLE t_{i:02} AS {rows}")  # type: ignore[call-overload]
    # through a pipe, as a backup runs it (a file as stdout would be seekable)
    done = subprocess.run(
        [str(server.bin_dir / "pg_dump"), "-Fc", "-Z0", server.dsn(DB)],
        check=True,
        stdout=subprocess.PIPE,
    )
    return done.stdout


@pytest.fixture(scope="module", params=["pg18", "pg15"])
def archive(request: pytest.FixtureRequest) -> Archive:
    server: PgServer = request.getfixturevalue(request.param)
    data = _build(server)
    return Archive(server, data, _check(data, len(data)))


@pytest.fixture(scope="module")
def pg_restore(pg18: PgServer) -> Tool:
    return find_tool("pg_restore", min_major=18, bin_dir=pg18.bin_dir)


def _pieces(data: bytes, size: int) -> Iterator[memoryview]:
    """``data`` in views of one reused buffer, as the backup's reader hands them out."""
    buffer = bytearray(size)
    view = memoryview(buffer)
    for at in range(0, len(data), size):
        part = data[at : at + size]
        view[: len(part)] = part
        yield view if len(part) == size else view[: len(part)]


def _check(data: bytes, size: int) -> Framing:
    frames = FramingCheck()
    for piece in _pieces(data, size):
        frames.feed(piece)
    return frames.finish()


def _flagged(data: bytes, size: int = 4093) -> str | None:
    try:
        _check(data, size)
    except BackupError as exc:
        return str(exc)
    return None


def _restore_flags(tool: Tool, data: bytes) -> bool:
    done = subprocess.run(
        [str(tool.path), "--file=/dev/null"], input=data, capture_output=True, check=False
    )
    return done.returncode != 0


def _boundaries(archive: Archive) -> list[int]:
    """Where each data block starts, and where the archive ends."""
    at = [archive.framing.toc_bytes]
    for block in archive.framing.blocks:
        at.append(at[-1] + block.size_bytes)
    return at


def test_a_whole_archive_passes_in_any_chunking(archive: Archive) -> None:
    toc = read_toc(archive.data)
    with_data = [e for e in toc.entries if e.had_dumper]
    assert with_data and all(e.state == POS_NOT_SET for e in with_data)
    blocks = archive.framing.blocks
    assert [b.dump_id for b in blocks] == [e.dump_id for e in with_data]
    assert _boundaries(archive)[-1] == len(archive.data) == archive.framing.size_bytes
    names = archive.framing.bytes_by_name()
    # pg_dump ends even an empty table's COPY data with "\\.": one chunk, then the end marker
    assert names["public.empty_one"] == 6 + 5 + 5 + 5
    assert names["public.every_byte"] > 2 * 65530
    assert sum(1 for n in names if n.startswith("public.t_")) == 40
    # PostgreSQL 17 and later: one large-object block per 1000 objects
    lo_blocks = [b.desc for b in blocks if b.desc == "BLOBS"]
    assert len(lo_blocks) == (2 if archive.server.major >= 17 else 1)
    for size in (1, 2, 7, 4093, 65537, len(archive.data), 1 << 20):
        assert _check(archive.data, size) == archive.framing, size
    whole = FramingCheck()
    whole.feed(archive.data)
    assert whole.finish() == archive.framing


def test_every_truncation_is_flagged_as_pg_restore_flags_it(
    archive: Archive, pg_restore: Tool
) -> None:
    print(f"seed {SEED}")
    rng = random.Random(SEED)
    size = len(archive.data)
    offsets = {0, 1, 5, 20, size - 1, size - 2, size - 5, size - 6}
    for boundary in _boundaries(archive):
        offsets.update((boundary - 1, boundary, boundary + 1))
    offsets.update(rng.randrange(size) for _ in range(200))
    offsets.discard(size)
    for offset in sorted(o for o in offsets if 0 <= o < size):
        flagged = _flagged(archive.data[:offset], size=rng.choice((4093, 65537, 1 << 20)))
        assert flagged is not None, offset
        assert "truncated" in flagged or "missing" in flagged or "empty" in flagged, flagged
    # pg_restore (the check this replaces) flags them too: a sample, it is slow to start
    for offset in rng.sample(sorted(o for o in offsets if 0 <= o < size), 25):
        assert _restore_flags(pg_restore, archive.data[:offset]), offset


def _damaged(archive: Archive) -> dict[str, tuple[bytes, bool, bool]]:
    """name -> (damaged bytes, framing flags it, pg_restore flags it)."""
    data, at = archive.data, _boundaries(archive)
    names = [b.name for b in archive.framing.blocks]
    k = names.index("public.every_byte")  # a table block with rows
    start, end = at[k], at[k + 1]
    after_first = start + 6 + 5  # header (type, dump id) and the first length word

    def patched(offset: int, value: bytes) -> bytes:
        return data[:offset] + value + data[offset + len(value) :]

    swapped = data[end : at[k + 2]] + data[start:end]
    second_word = data.index(b"\n\x00", after_first) + 1  # the second row's length word
    lo = names.index(next(b.name for b in archive.framing.blocks if b.desc == "BLOBS"))
    lo_length = at[lo] + 6 + 5  # the first object's first chunk length
    return {
        "block type": (patched(start, b"\x07"), True, True),
        "unknown dump id": (patched(start + 2, b"\x0f\x27"), True, True),
        "negative first length": (patched(start + 6, b"\x01"), True, True),
        "dropped block": (data[:start] + data[end:], True, True),
        "swapped blocks": (data[:start] + swapped + data[at[k + 2] :], True, True),
        "large object length": (patched(lo_length + 1, b"\xff\xff"), True, True),
        "not an archive": (b"PGDMX" + data[5:], True, True),
        # pg_restore skips a block it does not need while it looks for the next one
        "repeated block": (data[:end] + data[start:end] + data[end:], True, False),
        # pg_restore stops reading after the last block
        "bytes after the last block": (data + b"garbage", True, False),
        # a row's length word is read by pg_restore only (the zero run is all the check sees)
        "a row's length word": (patched(second_word + 3, b"\x01"), False, True),
        # the row text itself: neither (the SHA-256 and zstd checksums cover stored bytes)
        "a byte of row text": (patched(after_first + 1, b"Q"), False, False),
    }


def test_damage_is_flagged_as_documented(archive: Archive, pg_restore: Tool) -> None:
    for name, (data, framing_flags, restore_flags) in _damaged(archive).items():
        for size in (7, 1 << 20):
            assert (_flagged(data, size) is not None) == framing_flags, (name, size)
        assert _restore_flags(pg_restore, data) == restore_flags, name
    message = _flagged(_damaged(archive)["dropped block"][0])
    assert message is not None and "public.every_byte" in message and "missing" in message


def _stream(check: readback.StreamCheck, data: bytes) -> None:
    source, writer = pipe_with(data)
    try:
        with source:
            for _ in check.chunks(source):
                pass
        check.finish()
    finally:
        check.close()
        writer.join()


def test_archives_the_check_does_not_know_are_parsed_by_pg_restore(
    archive: Archive, pg_restore: Tool
) -> None:
    known = readback.StreamCheck("custom", pg_restore, None)
    _stream(known, archive.data)
    assert known.framing == archive.framing
    # a newer archive version: pg_restore 18 refuses it, so the backup fails (never unchecked)
    newer = archive.data[:5] + bytes([1, 99]) + archive.data[7:]
    frames = FramingCheck()
    frames.feed(newer[:100])
    assert frames.fallback == "archive version 1.99"
    with pytest.raises(BackupError, match="pg_restore cannot read"):
        _stream(readback.StreamCheck("custom", pg_restore, None), newer)
    # compressed by pg_dump: pg_restore reads it whole, and flags it truncated
    done = subprocess.run(
        [str(archive.server.bin_dir / "pg_dump"), "-Fc", "-Z1", archive.server.dsn(DB)],
        check=True,
        stdout=subprocess.PIPE,
    )
    fallback = readback.StreamCheck("custom", pg_restore, None)
    _stream(fallback, done.stdout)
    assert fallback.framing is None
    with pytest.raises(BackupError, match="pg_restore cannot read"):
        _stream(readback.StreamCheck("custom", pg_restore, None), done.stdout[:-100])
    with pytest.raises(BackupError, match="truncated inside the data block of"):
        _stream(readback.StreamCheck("custom", pg_restore, None), archive.data[:-100])
