"""Data offsets for a custom-format archive that pg_dump wrote to a pipe.

``pg_dump -Fc`` writing to a file goes back at the end and records, in each table-of-contents
entry, where its data block starts; writing to a pipe (pgwarden's ``.dump.zst``: ``pg_dump -Fc
-Z0`` through the zstd stage) it cannot, and every entry says "position not set".
``pg_restore --jobs`` then makes each worker find its block by reading the archive from the
start, skipping block after block -- with ``-Z0`` one length word per *row*: about a quarter of
a parallel restore's time (``benchmarks/verify.py``).

:class:`OffsetFinder` is fed the archive's bytes as they are decompressed into the spool file
(never the stored artifact).  It reads the header and the TOC (the layout of PostgreSQL's
``pg_backup_archiver.c`` ``ReadHead``/``ReadToc`` and the custom format's ``ReadOffset``, archive
versions 1.12 to 1.16), then finds each data block in TOC order: a block of uncompressed
``TABLE DATA`` is COPY text, which never holds a NUL byte, so its end marker (a zero length:
``intSize + 1`` zero bytes) followed by the next block's header (type byte, dump id) only
occurs at a real block boundary.  :meth:`OffsetFinder.write` then records the offsets in the
spool's TOC.  Only archives without compression are handled, and only up to the first
large-object block (binary data); anything unexpected leaves the archive as pg_dump wrote it.
pg_restore checks the block id it finds at every offset: a wrong offset could only make a
restore fail loudly, never change what it restores.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass

MAGIC = b"PGDMP"
FORMAT_CUSTOM = 1
BLK_DATA = 1
BLK_BLOBS = 3
POS_NOT_SET = 1
POS_SET = 2
MIN_VERSION = (1, 12)  # PostgreSQL 9.5
MAX_VERSION = (1, 16)  # PostgreSQL 17 and 18
#: a TOC bigger than this is not looked at (the spool stays as pg_dump wrote it)
HEAD_LIMIT = 64 << 20
#: bytes kept from the end of a chunk to find a boundary straddling it and the next one
_STRADDLE = 64


class Unexpected(Exception):
    """Not an archive this module handles."""


class Unsupported(Unexpected):
    """A custom archive, but of a version this module does not know, or compressed by pg_dump."""


class Incomplete(Exception):
    """More bytes are needed to read the TOC."""


@dataclass(frozen=True)
class Entry:
    dump_id: int
    desc: str
    state: int
    offset_at: int  # position of the entry's offset field (its flag byte)
    tag: str = ""  # the object's name (a table's name for its TABLE DATA)
    namespace: str = ""  # its schema, "" when it has none
    had_dumper: bool = False  # pg_dump wrote a data block for it


class _Reader:
    def __init__(self, buf: bytes | bytearray) -> None:
        self.buf = buf
        self.pos = 0
        self.int_size = 4

    def take(self, count: int) -> bytes:
        end = self.pos + count
        if end > len(self.buf):
            raise Incomplete
        raw = bytes(self.buf[self.pos : end])
        self.pos = end
        return raw

    def byte(self) -> int:
        return self.take(1)[0]

    def int(self) -> int:
        sign = self.byte()
        value = int.from_bytes(self.take(self.int_size), "little")
        return -value if sign else value

    def str(self) -> str | None:
        length = self.int()
        return None if length < 0 else self.take(length).decode("utf-8", "replace")


@dataclass(frozen=True)
class Toc:
    entries: list[Entry]
    data_start: int
    int_size: int
    off_size: int
    version: tuple[int, int] = (0, 0)


def read_toc(buf: bytes | bytearray) -> Toc:
    """The TOC of a custom archive whose first bytes are ``buf``."""
    r = _Reader(buf)
    if r.take(5) != MAGIC:
        raise Unexpected("not a custom-format archive")
    version = (r.byte(), r.byte())
    r.byte()  # revision
    if not MIN_VERSION <= version <= MAX_VERSION:
        raise Unsupported(f"archive version {version[0]}.{version[1]}")
    r.int_size = r.byte()
    off_size = r.byte()
    if r.byte() != FORMAT_CUSTOM or not 1 <= r.int_size <= 8 or not 1 <= off_size <= 8:
        raise Unexpected("not a custom-format archive")
    if (r.byte() if version >= (1, 15) else r.int()) != 0:
        raise Unsupported("compressed by pg_dump")
    for _ in range(7):  # creation time
        r.int()
    for _ in range(3):  # database name, server version, pg_dump version
        r.str()
    entries = []
    for _ in range(r.int()):
        dump_id = r.int()
        had_dumper = r.int() != 0
        r.str()  # catalog table oid
        r.str()  # oid
        tag = r.str() or ""
        desc = r.str() or ""
        r.int()  # section
        for _field in range(3):
            r.str()  # defn, dropStmt, copyStmt
        namespace = r.str() or ""
        for _field in range(2 if version >= (1, 14) else 1):
            r.str()  # tablespace, tableam
        if version >= (1, 16):
            r.int()  # relkind
        r.str()  # owner
        r.str()  # "false": no OIDs
        while r.str() is not None:  # dependencies
            pass
        offset_at = r.pos
        state = r.byte()
        r.take(off_size)
        entries.append(Entry(dump_id, desc, state, offset_at, tag, namespace, had_dumper))
    return Toc(entries, r.pos, r.int_size, off_size, version)


class OffsetFinder:
    """Finds data block positions in an archive fed to :meth:`feed` in order.

    Chunks are searched where they are (never copied): a block boundary that straddles two
    chunks is found in the last bytes of one joined with the first bytes of the next.
    """

    def __init__(self) -> None:
        self._head: bytearray | None = bytearray()
        self.toc: Toc | None = None
        self.found: list[tuple[Entry, int]] = []
        self.failed: str | None = None
        self._pending: deque[Entry] = deque()
        self._end = b""
        self._carry = b""
        self._position = 0  # archive position of the next byte fed
        self._search_from = 0

    @property
    def done(self) -> bool:
        return self.failed is not None or (self.toc is not None and not self._pending)

    def feed(self, chunk: bytes | bytearray) -> None:
        if self.done:
            self._position += len(chunk)
            return
        if self._head is not None:
            self._feed_head(chunk)
            return
        base = self._position
        if self._carry:
            joined = self._carry + bytes(chunk[:_STRADDLE])
            self._scan(joined, base - len(self._carry), accept_before=base)
            self._search_from = max(self._search_from, base)
        if not self.done:
            self._scan(chunk, base)
        self._carry = bytes(chunk[-_STRADDLE:])
        self._position = base + len(chunk)

    def _feed_head(self, chunk: bytes | bytearray) -> None:
        assert self._head is not None
        self._head += chunk
        self._position += len(chunk)
        try:
            toc = self.toc or read_toc(self._head)
        except Incomplete:
            if len(self._head) > HEAD_LIMIT:
                self.failed = "the table of contents is too large"
            return
        except Unexpected as exc:
            self.failed = str(exc)
            return
        self.toc = toc
        self._pending = deque(e for e in toc.entries if e.state == POS_NOT_SET)
        self._end = b"\x00" * (toc.int_size + 1)
        if not self._pending:
            return
        header = self._header(self._pending[0])
        if len(self._head) < toc.data_start + len(header):
            return  # the first block's header is not all here yet
        # the first block starts right after the TOC
        if self._head[toc.data_start : toc.data_start + len(header)] != header:
            self.failed = "the first data block is not where the TOC ends"
            return
        self._accept(toc.data_start, header)
        head, self._head = bytes(self._head), None
        self._carry = head[-_STRADDLE:]
        if not self.done:
            rest = head[self._search_from :]
            self._position = self._search_from
            self.feed(rest)

    def _header(self, entry: Entry) -> bytes:
        assert self.toc is not None
        kind = BLK_BLOBS if entry.desc == "BLOBS" else BLK_DATA
        return bytes([kind, 0]) + entry.dump_id.to_bytes(self.toc.int_size, "little")

    def _accept(self, start: int, header: bytes) -> None:
        self.found.append((self._pending.popleft(), start))
        self._search_from = start + len(header)
        if header[0] == BLK_BLOBS:
            self._pending.clear()  # binary data follows: no safe search past it

    def _scan(self, window: bytes | bytearray, base: int, accept_before: int | None = None) -> None:
        """Find the pending blocks in ``window`` (archive position ``base``), in order."""
        end = self._end
        while self._pending:
            i = max(self._search_from - base, 0)
            hit = window.find(end, i)
            if hit < 0 or (accept_before is not None and base + hit >= accept_before):
                if accept_before is None:
                    self._search_from = base + max(i, len(window) - len(end) + 1)
                return
            header = self._header(self._pending[0])
            start = hit + len(end)
            if len(window) < start + len(header):
                self._search_from = base + hit  # look again with the next bytes
                return
            if window[start : start + len(header)] == header:
                self._accept(base + start, header)
            else:
                self._search_from = base + hit + 1

    def write(self, fd: int) -> int:
        """Record the offsets found in the TOC of the file ``fd``; return how many."""
        if self.toc is None or self.failed is not None:
            return 0
        size = self.toc.off_size
        for entry, start in self.found:
            os.pwrite(fd, bytes([POS_SET]) + start.to_bytes(size, "little"), entry.offset_at)
        return len(self.found)
