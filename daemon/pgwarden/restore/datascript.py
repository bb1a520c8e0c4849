"""The data section of an archive as ``pg_restore --section=data --file=-`` writes it, cut into
what a loader needs: SQL to run, and each table's ``COPY`` rows in whole-line pieces.

A drill's data is read by stock ``pg_restore`` (every block of it decoded by the tool an
operator will use on the day), and its script is cut here without copying the rows: a piece
is a list of views into the reads it came from, ending at a row's end, so that any
connection can take any piece of a table (:mod:`pgwarden.restore.copyload`).

The script's grammar, as PostgreSQL 12-18's ``pg_restore`` writes it:

* a head of session settings (``SET ...;``, ``SELECT pg_catalog.set_config(...);``) before the
  first entry; every connection runs them (:attr:`ScriptCutter.settings`);
* per table-of-contents entry a comment block (``-- Name: ...`` or ``-- Data for Name: ...``),
  then its SQL; a ``TABLE DATA`` entry's SQL is ``COPY name (columns) FROM stdin;``, its rows,
  one per line (the text format escapes newlines inside values), and a line ``\\.``;
* ``\\restrict`` and ``\\unrestrict`` lines (psql meta-commands of PostgreSQL 13.22+, 17.6+
  and 18): meaningless outside psql, dropped.  Any other backslash line is refused.

Quotes are followed outside the rows (``'...'`` literals and ``"..."`` identifiers, which may
hold a newline), so that a ``COPY`` or a comment inside a name is not taken for one.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import dataclass, field

from pgwarden.errors import PgwardenError

#: the end of a table's rows: a line that is exactly ``\.``
_END = b"\\.\n"
_END_AFTER_ROW = b"\n\\.\n"
_COPY_TAIL = " FROM stdin;"
_ENTRY_HEADS = ("-- Name: ", "-- Data for Name: ")
_DROPPED_META = ("\\restrict", "\\unrestrict")
#: rows are handed on in pieces of about this many bytes
PIECE_BYTES = 1 << 20


class ScriptError(PgwardenError):
    """The script is not what ``pg_restore`` writes: nothing after this point is loaded."""


@dataclass(frozen=True)
class Statements:
    """SQL of one table-of-contents entry (or of several, when nothing separated them)."""

    sql: str


@dataclass(frozen=True)
class CopyStart:
    """A ``COPY ... FROM stdin`` statement; its rows follow as :class:`Rows`."""

    table: int
    statement: str


@dataclass(frozen=True)
class Rows:
    """Whole rows of the current table: ``parts`` joined end with a newline."""

    table: int
    parts: tuple[memoryview, ...]
    size: int


@dataclass(frozen=True)
class CopyEnd:
    """The ``\\.`` after a table's rows."""

    table: int


Event = Statements | CopyStart | Rows | CopyEnd


@dataclass
class _Sql:
    """Statement text being gathered, and whether a quote is open at its end."""

    lines: list[str] = field(default_factory=list)
    quote: str = ""
    #: the text of the line being gathered, when a read ended inside it
    partial: bytes = b""


class ScriptCutter:
    """Feed the script's bytes in reads of any size (:meth:`feed`), then :meth:`finish`; each
    call yields the events those bytes completed."""

    def __init__(self, piece_bytes: int = PIECE_BYTES) -> None:
        self.settings: list[str] = []
        self._piece_bytes = piece_bytes
        self._sql = _Sql()
        self._head = True
        self._tables = 0
        self._copy: str | None = None  # a COPY statement whose "FROM stdin;" is not seen yet
        self._in_rows = False
        #: bytes of the current row that the last read did not finish (no newline yet)
        self._tail: list[memoryview] = []
        self._tail_size = 0
        self._parts: list[memoryview] = []
        self._parts_size = 0
        self._short = b""

    @property
    def tables(self) -> int:
        return self._tables

    def feed(self, data: bytes) -> Iterator[Event]:
        if self._short:  # at most 2 bytes of rows, which could be the start of the "\\." line
            data, self._short = self._short + data, b""
        pos = 0
        while pos < len(data):
            if self._in_rows:
                pos = yield from self._rows(data, pos)
            else:
                pos = yield from self._text(data, pos)

    def finish(self) -> Iterator[Event]:
        if self._in_rows or self._short:
            raise ScriptError(f"the script ends inside the rows of table {self._tables}")
        if self._sql.partial:
            line = self._sql.partial.decode()
            self._sql.partial = b""
            yield from self._line(line)
        if self._copy is not None or self._sql.quote:
            raise ScriptError("the script ends inside a statement")
        yield from self._flush()

    # -- SQL text --------------------------------------------------------------------------

    def _text(self, data: bytes, pos: int) -> Generator[Event, None, int]:
        """Lines of SQL from ``pos`` up to the first row of a COPY: where the rows start."""
        while True:
            nl = data.find(b"\n", pos)
            if nl < 0:
                self._sql.partial += data[pos:]
                return len(data)
            raw = data[pos : nl + 1]
            if self._sql.partial:
                raw, self._sql.partial = self._sql.partial + raw, b""
            pos = nl + 1
            yield from self._line(raw.decode())
            if self._in_rows:
                return pos

    def _line(self, line: str) -> Iterator[Event]:
        sql = self._sql
        if not sql.quote and self._copy is None:
            if line.startswith("--"):
                if line.startswith(_ENTRY_HEADS):
                    self._head = False
                    yield from self._flush()
                return
            if line.startswith("\\"):
                if line.startswith(_DROPPED_META):
                    return
                raise ScriptError(f"unexpected psql meta-command in the script: {line[:40]!r}")
            if line.startswith("COPY "):
                self._copy = ""
        sql.quote = _quote_after(line, sql.quote)
        if self._copy is not None:
            self._copy += line
            if not sql.quote and self._copy.rstrip("\n").endswith(_COPY_TAIL):
                yield from self._flush()
                self._tables += 1
                self._in_rows = True
                yield CopyStart(self._tables, self._copy.rstrip("\n"))
                self._copy = None
            return
        if self._head and not sql.quote and not sql.lines:
            if line.strip():
                self.settings.append(line.strip())
            return
        sql.lines.append(line)

    def _flush(self) -> Iterator[Event]:
        text = "".join(self._sql.lines)
        self._sql.lines = []
        if text.strip():
            yield Statements(text)

    # -- COPY rows -------------------------------------------------------------------------

    def _rows(self, data: bytes, pos: int) -> Generator[Event, None, int]:
        """Rows of the current table from ``pos`` up to its ``\\.`` line: where that line ends
        (or ``len(data)``, the rows going on in the next read)."""
        view = memoryview(data)
        if self._tail_size < len(_END):
            ended = self._ends_tail(data, pos)
            if ended is None:  # too few bytes to tell: read again with the next bytes
                self._short = b"".join(bytes(t) for t in self._tail) + data[pos:]
                self._tail, self._tail_size = [], 0
                return len(data)
            if ended:
                need = len(_END) - self._tail_size
                self._tail, self._tail_size = [], 0
                yield from self._end()
                return pos + need
        # the "\\." line starts with a backslash: a chunk of rows without any (vectors, numbers)
        # is passed over by memchr, ten times faster than a search for the whole line
        backslash = data.find(b"\\", pos)
        end = data.find(_END_AFTER_ROW, max(pos, backslash - 1)) if backslash >= 0 else -1
        if end >= 0:
            self._add(view[pos : end + 1])
            yield from self._end()
            return end + 1 + len(_END)
        last = data.rfind(b"\n", pos)
        if last < 0:
            self._tail.append(view[pos:])
            self._tail_size += len(data) - pos
            return len(data)
        self._add(view[pos : last + 1])
        if self._parts_size >= self._piece_bytes:
            yield self._piece()
        if last + 1 < len(data):
            self._tail.append(view[last + 1 :])
            self._tail_size += len(data) - last - 1
        return len(data)

    def _ends_tail(self, data: bytes, pos: int) -> bool | None:
        """Whether the line that starts with the unfinished tail is the ``\\.`` line; ``None``
        when ``data`` is too short to tell."""
        need = len(_END) - self._tail_size
        if len(data) - pos < need:
            return None
        head = b"".join(bytes(t) for t in self._tail) + data[pos : pos + need]
        return head == _END

    def _add(self, part: memoryview) -> None:
        if self._tail:
            self._parts.extend(self._tail)
            self._parts_size += self._tail_size
            self._tail, self._tail_size = [], 0
        self._parts.append(part)
        self._parts_size += len(part)

    def _piece(self) -> Rows:
        piece = Rows(self._tables, tuple(self._parts), self._parts_size)
        self._parts, self._parts_size = [], 0
        return piece

    def _end(self) -> Iterator[Event]:
        if self._tail:
            raise ScriptError(f"table {self._tables}: a row without its end before the '\\.' line")
        if self._parts:
            yield self._piece()
        self._in_rows = False
        yield CopyEnd(self._tables)


def _quote_after(line: str, quote: str) -> str:
    """The quote still open after ``line`` (``''`` none), given the one open before it.  A
    ``--`` outside quotes comments out the rest of the line."""
    i, n = 0, len(line)
    while i < n:
        ch = line[i]
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "-" and line.startswith("--", i):
            return ""
        i += 1
    return quote
