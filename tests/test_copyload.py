"""A drill's data section cut from stock ``pg_restore --file=-`` and loaded over several
connections (:mod:`pgwarden.restore.datascript`, :mod:`pgwarden.restore.copyload`): the same
events whatever the read sizes, the same data as a stock restore (every type, names with
quotes and newlines, large objects, sequences, partitions), errors named and counted, a
cancel obeyed.  Real PostgreSQL 18 and its real ``pg_restore``."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgwarden.pg.conninfo import ConnSpec
from pgwarden.restore import copyload
from pgwarden.restore.datascript import (
    CopyEnd,
    CopyStart,
    Event,
    Rows,
    ScriptCutter,
    ScriptError,
    Statements,
)
from pgwarden.restore.toolerrors import LOADER_ERROR_PREFIX, classify
from tests.pgservers import PgServer
from tests.sampledata import (
    large_object_digest,
    make_rich_db,
    sequence_values,
    table_fingerprints,
)

FLAGS = ["--no-owner", "--no-privileges"]
_SEARCH_PATH = "SELECT pg_catalog.set_config('search_path', '', false);"
#: a table whose name holds a quote, a newline and what looks like the end of a COPY
AWKWARD_TABLE = '"we""ird\nCOPY x FROM stdin;"'


@pytest.fixture(scope="module")
def source(pg18: PgServer) -> str:
    make_rich_db(pg18, "copyload_src", rows=300)
    with pg18.connect("copyload_src") as conn:
        conn.execute(f"CREATE TABLE {AWKWARD_TABLE} (v text, n int)")
        conn.execute(
            f"INSERT INTO {AWKWARD_TABLE} "
            r"SELECT E'line\none\\.\t' || g, g FROM generate_series(1, 50) g"
        )
        conn.execute("CREATE TABLE empty_one (id int)")
        conn.execute("CREATE TABLE wide (id int, body text)")
        conn.execute(
            "INSERT INTO wide SELECT g, repeat(md5(g::text), 3000) FROM generate_series(1, 40) g"
        )
    return "copyload_src"


@pytest.fixture(scope="module")
def dump(pg18: PgServer, source: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("copyload") / "src.dump"
    subprocess.run(
        [str(pg18.bin_dir / "pg_dump"), "-Fc", "-Z0", "-f", str(path), pg18.dsn(source)],
        check=True,
    )
    path.chmod(0o644)
    return path


def _script(pg18: PgServer, dump: Path) -> bytes:
    return subprocess.run(
        [str(pg18.bin_dir / "pg_restore"), "--section=data", "--file=-", *FLAGS, str(dump)],
        check=True,
        capture_output=True,
    ).stdout


def _cut(
    script: bytes, step: int, piece_bytes: int
) -> tuple[list[str], list[Event], dict[int, bytes]]:
    cutter = ScriptCutter(piece_bytes)
    events: list[Event] = []
    for at in range(0, len(script), step):
        events.extend(cutter.feed(script[at : at + step]))
    events.extend(cutter.finish())
    rows: dict[int, bytes] = {}
    others: list[Event] = []
    for event in events:
        if isinstance(event, Rows):
            joined = b"".join(bytes(p) for p in event.parts)
            assert joined.endswith(b"\n") and len(joined) == event.size
            rows[event.table] = rows.get(event.table, b"") + joined
        else:
            others.append(event)
    return cutter.settings, others, rows


def test_the_script_cuts_the_same_whatever_the_read_sizes(pg18: PgServer, dump: Path) -> None:
    script = _script(pg18, dump)
    settings, events, rows = _cut(script, len(script), 1 << 20)
    assert any(s.startswith("SET client_encoding") for s in settings)
    copies = [e for e in events if isinstance(e, CopyStart)]
    assert any('"we""ird\nCOPY x FROM stdin;"' in e.statement for e in copies)
    assert len([e for e in events if isinstance(e, CopyEnd)]) == len(copies)
    statements = "".join(e.sql for e in events if isinstance(e, Statements))
    assert "setval" in statements and "lowrite" in statements
    assert "\\restrict" not in statements
    # every row line of the script, in the pieces, once
    body = sum(len(r) for r in rows.values())
    assert body > 2_000_000 and body < len(script)
    for step in (4096, 7919, 65_537):
        assert _cut(script, step, 10_000) == (settings, events, rows), step


#: every boundary a read can end on, in a script small enough to feed byte by byte: a quoted
#: name with a newline and a false end of COPY, rows ending in backslashes, an empty table,
#: a row that is exactly "\\." escaped, a sequence value, the psql meta-commands dropped
SMALL_SCRIPT = b"""--
-- PostgreSQL database dump
--

\\restrict abc

SET statement_timeout = 0;
SELECT pg_catalog.set_config('search_path', '', false);

--
-- Data for Name: t; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.t (a, b) FROM stdin;
1\tx\\
2\ty\\.
\\\\.
\\.


--
-- Data for Name: e; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public."we""ird
COPY x FROM stdin;" (a) FROM stdin;
\\.


--
-- Name: s; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.s', 5, true);

\\unrestrict abc
"""


def test_every_read_boundary_cuts_the_same() -> None:
    settings, events, rows = _cut(SMALL_SCRIPT, len(SMALL_SCRIPT), 1 << 20)
    assert settings == ["SET statement_timeout = 0;", _SEARCH_PATH]
    assert [type(e).__name__ for e in events] == [
        "CopyStart",
        "CopyEnd",
        "CopyStart",
        "CopyEnd",
        "Statements",
    ]
    assert rows == {1: b"1\tx\\\n2\ty\\.\n\\\\.\n"}
    for step in range(1, 12):
        for piece in (4, 1 << 20):
            assert _cut(SMALL_SCRIPT, step, piece) == (settings, events, rows), (step, piece)


def test_a_damaged_script_is_refused_with_its_reason() -> None:
    cutter = ScriptCutter()
    events = list(cutter.feed(b"-- Name: t; Type: TABLE DATA\nCOPY public.t (a) FROM stdin;\n1\n2"))
    assert isinstance(events[-1], CopyStart)
    with pytest.raises(ScriptError, match="ends inside the rows"):
        list(cutter.finish())
    with pytest.raises(ScriptError, match="meta-command"):
        list(ScriptCutter().feed(b"\\connect other\n"))


def _restore_with_loader(
    pg18: PgServer,
    dump: Path,
    name: str,
    *,
    jobs: int,
    piece_bytes: int,
    script: bytes | None = None,
) -> tuple[copyload.Loaded, list[str]]:
    pg18.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    pg18.create_database(name)
    restore = [str(pg18.bin_dir / "pg_restore"), *FLAGS, f"--dbname={pg18.dsn(name)}"]
    subprocess.run([*restore, "--section=pre-data", str(dump)], check=True)
    errors: list[str] = []
    data = script if script is not None else _script(pg18, dump)
    loaded = copyload.load(
        _reads(data, 300_001),
        ConnSpec(pg18.dsn(name)),
        jobs,
        tag="pgwarden-test-load",
        error_sink=errors.append,
        piece_bytes=piece_bytes,
    )
    subprocess.run([*restore, "--section=post-data", str(dump)], check=True)
    return loaded, errors


def _reads(data: bytes, size: int) -> Iterator[bytes]:
    for at in range(0, len(data), size):
        yield data[at : at + size]


def test_tables_split_over_connections_restore_what_was_dumped(
    pg18: PgServer, source: str, dump: Path
) -> None:
    loaded, errors = _restore_with_loader(pg18, dump, "copyload_dst", jobs=3, piece_bytes=4096)
    assert errors == []
    assert loaded.complete and loaded.tables >= 10
    want = table_fingerprints(pg18, source)
    assert table_fingerprints(pg18, "copyload_dst") == want
    # every table's rows were counted by the COPYs (the materialized view is post-data)
    tables = {name: v for name, v in want.items() if name != "public.user_stats"}
    assert loaded.rows == sum(count for count, _digest in tables.values())
    assert sequence_values(pg18, "copyload_dst") == sequence_values(pg18, source)
    assert large_object_digest(pg18, "copyload_dst") == large_object_digest(pg18, source)


def test_a_failing_copy_is_an_error_of_the_restore_and_the_rest_loads(
    pg18: PgServer, source: str, dump: Path
) -> None:
    script = _script(pg18, dump)
    # a row of empty_one's table gets a value its column cannot take
    copy = b"COPY public.empty_one (id) FROM stdin;\n"
    assert copy in script
    damaged = script.replace(copy, copy + b"not a number\n", 1)
    loaded, errors = _restore_with_loader(
        pg18, dump, "copyload_bad", jobs=2, piece_bytes=4096, script=damaged
    )
    assert loaded.complete
    assert len(errors) == 1 and errors[0].startswith(LOADER_ERROR_PREFIX)
    assert "COPY failed for table public.empty_one" in errors[0]
    assert "invalid input syntax for type integer" in errors[0]
    found = classify(errors, plain=False, server_major=18, drill=True)
    assert found.errors == errors
    got = table_fingerprints(pg18, "copyload_bad")
    assert got["public.users"] == table_fingerprints(pg18, source)["public.users"]


def test_a_cancel_stops_the_load(pg18: PgServer, dump: Path) -> None:
    cancel = threading.Event()
    pg18.execute("DROP DATABASE IF EXISTS copyload_cancel WITH (FORCE)")
    pg18.create_database("copyload_cancel")
    restore = [str(pg18.bin_dir / "pg_restore"), *FLAGS, f"--dbname={pg18.dsn('copyload_cancel')}"]
    subprocess.run([*restore, "--section=pre-data", str(dump)], check=True)
    script = _script(pg18, dump)

    def reads() -> Iterator[bytes]:
        for index, data in enumerate(_reads(script, 100_000)):
            if index == 3:
                cancel.set()
            yield data

    errors: list[str] = []
    loaded = copyload.load(
        reads(),
        ConnSpec(pg18.dsn("copyload_cancel")),
        2,
        tag="pgwarden-test-load",
        error_sink=errors.append,
        cancel=cancel,
        piece_bytes=4096,
    )
    assert not loaded.complete
    assert loaded.script_bytes < len(script)
    left = pg18.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgwarden-test-load'"
    )
    assert left == [(0,)]
