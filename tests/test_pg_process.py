"""The tool runner: streaming, concurrent stderr, cancellation of whole process groups, timeouts,
redaction; and a real ``gunzip -c | psql`` pipeline into PostgreSQL 18.

Shell snippets use ``/bin/sh`` explicitly, in the tests only: the daemon never runs a shell.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pgwarden.errors import ToolError
from pgwarden.pg.conninfo import ConnSpec, tool_environment
from pgwarden.pg.process import (
    CHUNK,
    PIPE,
    ToolResult,
    check,
    redact,
    run_pipeline,
    run_tool,
    start_tool,
)
from tests.pgservers import PgServer, embedded_bin_dir

SH = "/bin/sh"
ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (PID 1 here may not reap orphans)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_dead(pid: int, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.02)
    return False


class RecordingLogger:
    """A structlog-shaped logger that keeps what it is given."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def info(self, event: str, /, *args: Any, **kw: Any) -> None:
        self.events.append(("info", event, kw))

    def warning(self, event: str, /, *args: Any, **kw: Any) -> None:
        self.events.append(("warning", event, kw))


# -- streaming ----------------------------------------------------------------------------------


def test_large_stdout_with_busy_stderr_does_not_deadlock() -> None:
    """50 MB on stdout while 20,000 lines (far more than a pipe holds) go to stderr."""
    script = (
        "head -c 50000000 /dev/zero & "
        'i=0; while [ $i -lt 20000 ]; do echo "progress line $i" >&2; i=$((i+1)); done; wait'
    )
    digest = hashlib.sha256()
    sizes: list[int] = []

    def sink(chunk: bytes) -> None:
        sizes.append(len(chunk))
        digest.update(chunk)

    result = check(run_tool([SH, "-c", script], env=ENV, stdout=sink, timeout=120))
    assert sum(sizes) == 50_000_000
    assert max(sizes) <= CHUNK
    assert digest.hexdigest() == hashlib.sha256(bytes(50_000_000)).hexdigest()
    assert result.stderr_tail.splitlines()[-1] == "progress line 19999"
    assert len(result.stderr_tail.splitlines()) == 20


def test_stdout_to_a_file_object_and_stdin_from_one() -> None:
    payload = bytes(range(256)) * 20_000
    out = io.BytesIO()
    check(run_tool(["cat"], env=ENV, stdin=io.BytesIO(payload), stdout=out, timeout=30))
    assert out.getvalue() == payload
    # a gzip stream is a file object too: decompressed by Python, fed to the tool
    packed = io.BytesIO(gzip.compress(b"a\nb\nc\n"))
    count = io.BytesIO()
    check(run_tool(["wc", "-l"], env=ENV, stdin=gzip.GzipFile(fileobj=packed), stdout=count))
    assert count.getvalue().strip() == b"3"


def test_a_failing_sink_stops_the_tool_and_propagates() -> None:
    calls = []

    def sink(chunk: bytes) -> None:
        calls.append(len(chunk))
        raise OSError(28, "No space left on device")

    started = time.monotonic()
    with pytest.raises(OSError, match="No space left"):
        run_tool(["cat", "/dev/zero"], env=ENV, stdout=sink, timeout=60)
    assert len(calls) == 1
    assert time.monotonic() - started < 10


def test_stdin_reader_failure_is_an_error_not_a_short_input() -> None:
    class Broken(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            raise OSError(5, "Input/output error")

    with pytest.raises(ToolError, match="reading its input failed"):
        run_tool(["cat"], env=ENV, stdin=io.BufferedReader(Broken()), stdout=io.BytesIO())
    # a truncated .gz raises EOFError, not OSError: still an error, never a clean short input
    truncated = io.BytesIO(gzip.compress(b"x" * 100_000)[:-20])
    out = io.BytesIO()
    with pytest.raises(ToolError, match="reading its input failed") as info:
        run_tool(["cat"], env=ENV, stdin=gzip.GzipFile(fileobj=truncated), stdout=out)
    assert isinstance(info.value.__cause__, EOFError)


# -- cancellation and timeouts ------------------------------------------------------------------


def test_cancel_kills_the_whole_group_including_a_grandchild() -> None:
    cancel = threading.Event()
    script = "sleep 100 & echo $!; sleep 100"
    with start_tool([SH, "-c", script], env=ENV, cancel=cancel, name="sleeper") as tool:
        assert tool.stdout is not None
        grandchild = int(tool.stdout.readline())
        assert _alive(grandchild)
        started = time.monotonic()
        cancel.set()
        result = tool.wait()
    assert result.cancelled
    assert not result.timed_out
    assert not result.ok
    assert result.returncode == -15
    assert time.monotonic() - started < 3
    assert _wait_dead(grandchild)
    with pytest.raises(ToolError, match="sleeper: cancelled"):
        check(result)


def test_timeout_kills_the_group() -> None:
    out: list[bytes] = []
    started = time.monotonic()
    result = run_tool(
        [SH, "-c", "sleep 100 & echo $!; sleep 100"], env=ENV, stdout=out.append, timeout=0.5
    )
    elapsed = time.monotonic() - started
    assert result.timed_out
    assert 0.5 <= elapsed < 4
    assert 0.5 <= result.duration_s < 4
    assert _wait_dead(int(b"".join(out)))
    with pytest.raises(ToolError, match="timed out after"):
        check(result)


def test_sigterm_ignored_means_sigkill_after_the_grace() -> None:
    with start_tool([SH, "-c", "trap '' TERM; echo ready; sleep 100"], env=ENV) as tool:
        assert tool.stdout is not None
        assert tool.stdout.readline() == b"ready\n"
        started = time.monotonic()
        tool.terminate_group(grace=0.5)
        result = tool.wait()
    assert 0.5 <= time.monotonic() - started < 3
    assert result.returncode == -9
    assert result.cancelled
    assert (
        "killed by SIGKILL"
        in ToolResult(tool="x", returncode=-9, stderr_tail="", duration_s=1).describe()
    )


def test_leaving_the_block_early_reaps_the_tool() -> None:
    pids: list[int] = []

    def fail_inside() -> None:
        with start_tool(["sleep", "100"], env=ENV) as tool:
            pids.append(tool.pid)
            raise RuntimeError("the caller failed")

    with pytest.raises(RuntimeError):
        fail_inside()
    assert not _alive(pids[0])


def test_background_child_holding_the_pipes_does_not_hang() -> None:
    """A child left behind holds stdout and stderr open; it is killed soon after the tool."""
    out: list[bytes] = []
    started = time.monotonic()
    result = run_tool(
        [SH, "-c", "sleep 100 & echo $!; echo started >&2"], env=ENV, stdout=out.append
    )
    assert result.returncode == 0
    assert result.stderr_tail == "started"
    assert time.monotonic() - started < 6
    assert _wait_dead(int(b"".join(out)))


# -- errors, stderr and logging -----------------------------------------------------------------


def test_exit_status_and_redacted_stderr_tail(caplog: pytest.LogCaptureFixture) -> None:
    script = (
        'i=1; while [ $i -le 30 ]; do echo "line $i password=hunter$i" >&2; i=$((i+1)); done; '
        "echo 'pg_dump: error: connection to postgresql://bob:hunter2@db/app failed' >&2; exit 3"
    )
    caplog.set_level(logging.INFO, logger="pgwarden.test.tools")
    result = run_tool(
        [SH, "-c", script], env=ENV, name="pg_dump", log=logging.getLogger("pgwarden.test.tools")
    )
    assert result.returncode == 3
    lines = result.stderr_tail.splitlines()
    assert len(lines) == 20
    assert lines[0] == "line 12 password=***"
    assert lines[-1] == "pg_dump: error: connection to postgresql://bob:***@db/app failed"
    assert "hunter" not in caplog.text
    assert len(caplog.records) == 31
    assert caplog.records[-1].levelno == logging.WARNING
    assert caplog.records[0].levelno == logging.INFO
    with pytest.raises(ToolError) as info:
        check(result)
    assert info.value.tool == "pg_dump"
    assert info.value.returncode == 3
    assert info.value.stderr_tail == result.stderr_tail
    assert "exited with status 3" in str(info.value)
    assert check(result, ok_codes=(0, 3)) is result


def test_structured_logger_gets_tool_and_line() -> None:
    log = RecordingLogger()
    run_tool(
        [SH, "-c", "echo hello >&2; echo 'psql: FATAL: nope' >&2"], env=ENV, log=log, name="psql"
    )
    assert [e[0] for e in log.events] == ["info", "warning"]
    assert log.events[0][2]["tool"] == "psql"
    assert log.events[0][2]["line"] == "hello"


def test_bad_argv_and_missing_binary() -> None:
    with pytest.raises(TypeError):
        run_tool("echo hi", env=ENV)  # a str is a Sequence[str]: refused at run time
    with pytest.raises(ToolError, match="cannot start"):
        run_tool(["/nonexistent/pg_dump", "--version"], env=ENV)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("host=h password=s3cret dbname=x", "host=h password=*** dbname=x"),
        ("password='a b\\' c' port=1", "password=*** port=1"),
        ('PGPASSWORD="x y" psql', "PGPASSWORD=*** psql"),
        ("sslpassword = k3y", "sslpassword = ***"),
        ("oauth_client_secret=abc", "oauth_client_secret=***"),
        ("postgres://u:p%40ss@host:5432/db", "postgres://u:***@host:5432/db"),
        (
            'FATAL:  password authentication failed for user "bob"',
            'FATAL:  password authentication failed for user "bob"',
        ),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


# -- pipelines ----------------------------------------------------------------------------------


def test_pipeline_gunzip_into_psql(pg18: PgServer, tmp_path: Path) -> None:
    """The seed's restore procedure, ``gunzip -c x.sql.gz | psql``, as two tools."""
    pg18.create_database("t_pipeline")
    dump = tmp_path / "x.sql.gz"
    with gzip.open(dump, "wt") as f:
        f.write("CREATE TABLE items (id int PRIMARY KEY, name text);\n")
        f.write("INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 5000) g;\n")
    spec = ConnSpec(pg18.dsn("t_pipeline"))
    psql = str(embedded_bin_dir() / "psql")
    with tool_environment(spec) as env:
        first, second = run_pipeline(
            ["gunzip", "-c", str(dump)],
            [
                psql,
                "--no-psqlrc",
                "--no-password",
                "-v",
                "ON_ERROR_STOP=1",
                "--quiet",
                "--dbname",
                spec.tool_conninfo(),
            ],
            env=env,
            timeout=60,
        )
    check(second)
    check(first)
    assert pg18.execute("SELECT count(*) FROM items", "t_pipeline") == [(5000,)]
    pg18.drop_database("t_pipeline")


def test_pipeline_consumer_failure_stops_the_producer() -> None:
    started = time.monotonic()
    first, second = run_pipeline(
        ["cat", "/dev/zero"], [SH, "-c", "head -c 10 >/dev/null; exit 4"], env=ENV, timeout=30
    )
    assert second.returncode == 4
    assert not first.ok
    assert time.monotonic() - started < 10


def test_pipeline_output_and_chaining_by_hand() -> None:
    out = io.BytesIO()
    first, second = run_pipeline(
        ["printf", "b\\na\\nc\\n"], ["sort"], env=ENV, stdout=out, names=("gen", "sort")
    )
    assert (first.tool, second.tool) == ("gen", "sort")
    assert out.getvalue() == b"a\nb\nc\n"
    # the same by hand: the first tool's stdout becomes the second's stdin
    with start_tool(["printf", "x\\ny\\n"], env=ENV) as producer:
        assert producer.stdout is not None
        with start_tool(["wc", "-l"], env=ENV, stdin=producer.stdout, stdout=PIPE) as consumer:
            producer.stdout.close()
            assert consumer.stdout is not None
            counted = consumer.stdout.read()
            check(consumer.wait())
        check(producer.wait())
    assert counted.strip() == b"2"
