"""In-line proof that a custom-format archive is whole: its block framing walked as it passes.

A backup in the custom format (``pg_dump -Fc -Z0`` to a pipe, compressed by pgwarden) must be
proven whole before it is published.  :class:`FramingCheck` is fed the archive's bytes in order,
in the pgwarden process, and walks the layout of PostgreSQL's ``pg_backup_archiver.c`` and
``pg_backup_custom.c``: the header and the table of contents
(:func:`pgwarden.archive.customtoc.read_toc`), then one data block per TOC entry that has data,
in TOC order -- a type byte (``BLK_DATA``, or ``BLK_BLOBS`` for large objects), the entry's dump
id, then chunks (a length, that many bytes) ended by a zero length -- and nothing after the last
block.

With ``-Z0`` pg_dump writes one chunk per *row*; reading every length word in Python would cost
more than the dump.  A ``TABLE DATA`` block is COPY (or INSERT) text, which never holds a NUL
byte, and a length word holds at most ``intSize`` zero bytes in a row, so after a block's first
length word the first run of ``intSize + 1`` zero bytes is its end marker: it is found with
``bytes.find`` at memory speed.  A large-object block is binary: its chunks (16 KiB each) are
walked one by one.  Chunks are searched where they are; only the TOC and a few bytes of a field
straddling two chunks are copied.

What it sees, against ``pg_restore --file=/dev/null`` fed the same bytes (what the backup ran
before; ``tests/test_customframes.py`` runs both over damaged archives):

* a truncation anywhere -- in the TOC, in a block, between two blocks: both;
* a block dropped or out of order, an unknown dump id or block type, a damaged block header
  or first length word, a damaged large-object chunk length: both;
* a block repeated: only this check (pg_restore skips a block it does not need while it
  looks for the next one it does); the check accepts only pg_dump's own order;
* bytes after the last block: only this check (pg_restore stops reading after the last block);
* a damaged length word inside a table's rows: pg_restore (it reads every word; its error
  depends on where the wrong length leads), not this check unless the damage makes a zero
  run; a damaged byte inside row text: neither.  The stored artifact's bytes are covered by
  the SHA-256 re-read from disk and zstd's frame checksums, and stock ``pg_restore`` reads the
  whole archive in every restore drill.

Archives this module does not know (a version outside ``customtoc``'s range, or compressed by
pg_dump) set :attr:`FramingCheck.fallback` as soon as the header is read; the caller then
parses the stream another way (:class:`pgwarden.backup.readback.StreamCheck`: stock
``pg_restore``) and never trusts this check for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pgwarden.archive import customtoc
from pgwarden.archive.customtoc import BLK_BLOBS, BLK_DATA, Entry, Toc
from pgwarden.errors import BackupError

#: the offset state of a TOC entry without a data block
K_OFFSET_NO_DATA = 3
#: the description of a TOC entry whose block holds large objects (PostgreSQL 17 and later
#: write one such entry per 1000 objects, tagged with their first and last OID)
LARGE_OBJECTS_DESC = "BLOBS"
#: a TOC bigger than this is not walked: the caller falls back (memory stays bounded)
HEAD_LIMIT = 256 << 20


@dataclass(frozen=True)
class Block:
    """One data block as found: whose, and how many archive bytes (header to end marker)."""

    dump_id: int
    desc: str
    name: str
    size_bytes: int


@dataclass(frozen=True)
class Framing:
    """A whole archive: its version, its TOC's size, each data block, its total size."""

    version: tuple[int, int]
    toc_bytes: int
    blocks: tuple[Block, ...]
    size_bytes: int

    def bytes_by_name(self) -> dict[str, int]:
        return {b.name: b.size_bytes for b in self.blocks}


def describe(entry: Entry) -> str:
    """``TABLE DATA public.users (dump id 7)``."""
    name = f"{entry.namespace}.{entry.tag}" if entry.namespace else entry.tag
    return f"{entry.desc} {name} (dump id {entry.dump_id})"


def _block_type(entry: Entry) -> int:
    return BLK_BLOBS if entry.desc == LARGE_OBJECTS_DESC else BLK_DATA


def _searchable(chunk: bytes | bytearray | memoryview) -> bytes | bytearray:
    """``chunk`` as an object with ``find``: the buffer a whole-buffer view shows (no copy),
    else a copy (a stream's last, short chunk)."""
    if not isinstance(chunk, memoryview):
        return chunk
    obj = chunk.obj
    if (
        isinstance(obj, (bytes, bytearray))
        and chunk.c_contiguous
        and chunk.itemsize == 1
        and chunk.nbytes == len(obj)
    ):
        return obj
    return chunk.tobytes()


class FramingCheck:
    """Feed an archive's bytes in order (:meth:`feed`), then :meth:`finish`.

    :meth:`feed` never raises: the first problem is kept (the rest of the stream is counted
    only) and :meth:`finish` raises it as :class:`~pgwarden.errors.BackupError`, so that a
    caller reading a tool's pipe keeps draining it."""

    def __init__(self) -> None:
        self.fallback: str | None = None  # why this archive cannot be checked here
        self._head: bytearray | None = bytearray()
        self._next_try = 1  # head length at which the TOC is parsed again
        self._toc: Toc | None = None
        self._expected: list[Entry] = []
        self._index: dict[int, int] = {}  # dump id -> position in _expected
        self._pos = 0  # archive offset of the next byte fed
        self._error: str | None = None
        self._done = False  # every block was read
        self._extra_from: int | None = None  # where bytes after the last block start
        self._blocks: list[Block] = []
        self._block = 0  # index in _expected of the block being read
        self._block_start = 0
        # a structural field being read: how many bytes, those seen so far, what follows
        self._need = 0
        self._small = bytearray()
        self._then: Callable[[bytes], None] = self._on_header
        self._field_end = 0  # archive offset just after the field handed to _then
        self._scan = False  # searching a data block's end marker
        self._zeros = 0  # zero bytes at the end of what the search has seen
        self._skip = 0  # large-object bytes still to pass over
        self._marker = b""

    def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        """The next bytes of the archive; a view is not kept after this returns."""
        if not len(chunk):
            return
        if self._error is not None or self.fallback is not None or self._done:
            if self._done and self._extra_from is None:
                self._extra_from = self._pos
            self._pos += len(chunk)
        elif self._head is not None:
            self._head += chunk
            self._pos += len(chunk)
            if len(self._head) >= self._next_try:
                self._try_toc(final=False)
        else:
            self._walk(_searchable(chunk))

    def head_bytes(self) -> bytes:
        """Every byte fed so far, while the TOC is being read (for a fallback to replay)."""
        if self._head is None:
            raise ValueError("the table of contents was read: the head is gone")
        return bytes(self._head)

    def finish(self) -> Framing:
        """The stream ended: what was found, or :class:`BackupError` naming what is wrong."""
        if self._head is not None and self._error is None and self.fallback is None:
            if not self._head:
                self._fail("pg_dump wrote nothing (empty)")
            else:
                self._try_toc(final=True)
        if self.fallback is not None:
            raise BackupError(f"the archive's framing cannot be checked here: {self.fallback}")
        if self._error is None and not self._done:
            self._fail(self._truncation())
        if self._error is None and self._extra_from is not None:
            self._fail(
                f"{self._pos - self._extra_from} bytes follow its last data block "
                f"(from byte {self._extra_from})"
            )
        if self._error is not None:
            raise BackupError(f"the dump is not a whole custom archive: {self._error}")
        assert self._toc is not None
        toc = self._toc
        return Framing(toc.version, toc.data_start, tuple(self._blocks), self._pos)

    def _truncation(self) -> str:
        entry = describe(self._expected[self._block])
        if not self._scan and not self._skip and not self._small and self._then == self._on_header:
            return (
                f"truncated after {self._block} of {len(self._expected)} data blocks: "
                f"the block of {entry} is missing (the stream ends at byte {self._pos})"
            )
        return (
            f"truncated inside the data block of {entry}, which starts at byte "
            f"{self._block_start}; the stream ends at byte {self._pos}"
        )

    def _try_toc(self, *, final: bool) -> None:
        assert self._head is not None
        head = self._head
        try:
            toc = customtoc.read_toc(head)
        except customtoc.Incomplete:
            self._next_try = 2 * len(head)  # parse again when twice as much is here
            if len(head) > HEAD_LIMIT:
                self.fallback = "its table of contents is larger than 256 MiB"
            elif final:
                self._fail(f"truncated inside its table of contents ({len(head)} bytes)")
            return
        except customtoc.Unsupported as exc:
            self.fallback = str(exc)
            return
        except customtoc.Unexpected as exc:
            self._fail(str(exc))
            return
        self._toc = toc
        self._expected = [e for e in toc.entries if e.had_dumper and e.state != K_OFFSET_NO_DATA]
        self._index = {e.dump_id: i for i, e in enumerate(self._expected)}
        self._marker = b"\x00" * (toc.int_size + 1)
        self._head = None
        self._pos = toc.data_start
        self._expect_header(toc.data_start)
        self._walk(bytes(head[toc.data_start :]))

    def _walk(self, data: bytes | bytearray) -> None:
        """Read ``data`` (the archive from :attr:`_pos` on) field by field."""
        base = self._pos
        at, end = 0, len(data)
        while at < end and self._error is None and not self._done:
            if self._scan:
                at = self._search(data, at, base)
            elif self._skip:
                step = min(self._skip, end - at)
                self._skip -= step
                at += step
            else:
                step = min(self._need - len(self._small), end - at)
                self._small += data[at : at + step]
                at += step
                if len(self._small) == self._need:
                    field, self._small = bytes(self._small), bytearray()
                    self._field_end = base + at
                    self._then(field)
        if self._done and at < end:
            self._extra_from = base + at
        self._pos = base + end

    def _search(self, data: bytes | bytearray, at: int, base: int) -> int:
        """Look for the end marker from ``data[at]``; return where reading goes on."""
        marker = self._marker
        if self._zeros:  # a run of zeros at the end of the last chunk may go on here
            need = len(marker) - self._zeros
            lead = data[at : at + need]
            if lead.count(0) == len(lead):
                if len(lead) < need:
                    self._zeros += len(lead)
                    return at + len(lead)
                self._end_block(base + at + need)
                return at + need
            self._zeros = 0
        hit = data.find(marker, at)
        if hit >= 0:
            self._end_block(base + hit + len(marker))
            return hit + len(marker)
        tail = data[max(at, len(data) - len(marker) + 1) :]
        self._zeros = len(tail) - len(tail.rstrip(b"\x00"))
        return len(data)

    # -- fields: each handler runs when its field is complete --------------------------------

    def _read(self, count: int, then: Callable[[bytes], None]) -> None:
        self._need, self._then = count, then

    @staticmethod
    def _int(field: bytes) -> int:
        value = int.from_bytes(field[1:], "little")
        return -value if field[0] else value

    def _int_bytes(self) -> int:
        assert self._toc is not None
        return self._toc.int_size + 1

    def _expect_header(self, start: int) -> None:
        if self._block == len(self._expected):
            self._done = True
            return
        self._block_start = start
        self._read(1 + self._int_bytes(), self._on_header)

    def _on_header(self, field: bytes) -> None:
        entry = self._expected[self._block]
        kind, dump_id = field[0], self._int(field[1:])
        found = self._index.get(dump_id)
        where = f"at byte {self._block_start}"
        if kind not in (BLK_DATA, BLK_BLOBS):
            self._fail(f"unknown block type {kind} {where}, where {describe(entry)} should start")
        elif found is None:
            self._fail(f"a block of unknown dump id {dump_id} {where}, expected {describe(entry)}")
        elif found < self._block:
            other = describe(self._expected[found])
            self._fail(f"the data block of {other} appears twice (again {where})")
        elif found > self._block:
            other = describe(self._expected[found])
            self._fail(
                f"the data block of {describe(entry)} is missing or out of order: "
                f"{other} comes {where}"
            )
        elif kind != _block_type(entry):
            self._fail(f"the data block of {describe(entry)} has block type {kind} {where}")
        elif kind == BLK_DATA:
            self._read(self._int_bytes(), self._on_first_length)
        else:
            self._read(self._int_bytes(), self._on_oid)

    def _on_first_length(self, field: bytes) -> None:
        length = self._int(field)
        if length < 0:
            self._fail(f"a negative chunk length in the data block of {self._current()}")
        elif length == 0:
            self._end_block(self._field_end)  # an empty table
        else:
            self._scan, self._zeros = True, 0

    def _on_oid(self, field: bytes) -> None:
        if self._int(field) == 0:
            self._end_block(self._field_end)
        else:
            self._read(self._int_bytes(), self._on_object_length)

    def _on_object_length(self, field: bytes) -> None:
        length = self._int(field)
        if length < 0:
            self._fail(f"a negative chunk length in the data block of {self._current()}")
        elif length == 0:
            self._read(self._int_bytes(), self._on_oid)
        else:
            self._skip = length
            self._read(self._int_bytes(), self._on_object_length)

    def _end_block(self, end: int) -> None:
        """The block being read ends at archive offset ``end``."""
        self._scan = False
        entry = self._expected[self._block]
        name = f"{entry.namespace}.{entry.tag}" if entry.namespace else entry.tag
        self._blocks.append(Block(entry.dump_id, entry.desc, name, end - self._block_start))
        self._block += 1
        self._expect_header(end)

    def _current(self) -> str:
        return describe(self._expected[self._block])

    def _fail(self, message: str) -> None:
        if self._error is None:
            self._error = message
