"""``pg_restore`` and ``psql`` for restores: the plan, the exact commands, the run, the errors.

Per format (see :mod:`pgwarden.backup.pgdump`):

* ``.dump`` (pg_dump's own compression, or none) and ``.dir``: ``pg_restore --jobs=N`` reads
  the artifact in place;
* ``.dump.zst`` (pg_dump ``-Z0`` through pgwarden's zstd stage): with ``--jobs`` > 1 it is
  decompressed into a spool file beside the storage during the checksum pass
  (:mod:`pgwarden.restore.staging`), then ``pg_restore --jobs=N`` reads that; with one job, or
  when the spool does not fit, it is decompressed in-process straight into a serial
  ``pg_restore`` (``benchmarks/verify.py`` measures both: streaming took 1.2-1.5x as long as
  spooling for ``--jobs=2`` on its 1.2 GB database);
* ``.sql.gz`` / ``.sql``: decompressed in-process into ``psql``.

Drills restore with ``--no-owner --no-privileges --no-tablespaces --no-subscriptions
--no-publications`` (the verification server need not have the roles or tablespaces, and an
unlogged table cannot be published); ``pgwarden restore`` keeps owners
and privileges.  Every line the tool writes on stderr is kept; errors are counted and
reported, the known harmless ones apart (:mod:`pgwarden.restore.toolerrors`).

Each tool run is watched for stalls (``[targets.verify] stall_timeout``, for drills and
``pgwarden restore`` alike): progress is the bytes fed to the tool's stdin (a streamed
restore) or the tool's sessions -- tagged with an ``application_name`` of their own --
working on the server (an index build or a foreign-key check reads nothing for minutes);
a session waiting on another's lock is not working (:mod:`pgwarden.pg.stallwatch`).
"""

from __future__ import annotations

import contextlib
import fcntl
import re
import shlex
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pgwarden.archive.manifest import Manifest
from pgwarden.logsetup import get_logger
from pgwarden.pg import process, stallwatch
from pgwarden.pg.binaries import Tool, find_tool
from pgwarden.pg.conninfo import ConnSpec, tool_environment
from pgwarden.pg.environment import local_tool_environment
from pgwarden.pg.stallwatch import StallWatch, session_tag
from pgwarden.restore import copyload, dataload, scratch, staging
from pgwarden.restore.outcome import STALLED, CheckResult, StepError
from pgwarden.restore.toolerrors import MAX_ERROR_LINES, StderrLines, classify

log = get_logger("pgwarden.restore")
T = TypeVar("T")

DRILL_FLAGS = (
    "--no-owner",
    "--no-privileges",
    "--no-tablespaces",
    "--no-subscriptions",
    "--no-publications",
)


def dump_major(manifest: Manifest) -> int:
    """The major version of the pg_dump that wrote the archive (the restore tool's minimum)."""
    match = re.match(r"(\d+)", str(manifest.pg_dump.get("version", "")))
    if match:
        return int(match.group(1))
    return int(manifest.server.get("version_num") or 0) // 10000 or 1


def find_restore_tool(manifest: Manifest, bin_dir: Path | None) -> Tool:
    """``psql`` for a plain dump, else ``pg_restore``; at least as new as the archive's pg_dump."""
    name = "psql" if manifest.format == "plain" else "pg_restore"
    return find_tool(name, min_major=dump_major(manifest), bin_dir=bin_dir)


@dataclass(frozen=True)
class RestorePlan:
    """How one archive is restored: the tool, the parallelism and the flags."""

    manifest: Manifest
    artifact: Path
    tool: Tool
    jobs: int = 1
    drill: bool = True
    clean: bool = False
    #: connections loading a drill's data section (:mod:`.dataload`); 0: ``pg_restore`` does
    load_jobs: int = 0
    #: the head of a streamed archive (:func:`staging.write_toc_head`): what the schema
    #: sections are restored from, post-data with ``--jobs``
    toc: Path | None = None

    @property
    def codec(self) -> str | None:
        return staging.codec_of(self.manifest)

    @property
    def spools(self) -> bool:
        """Whether the archive is decompressed to a spool file first (for ``--jobs``)."""
        return (
            self.manifest.format == "custom"
            and self.codec is not None
            and self.jobs > 1
            and not self.load_jobs  # a split load reads a stream: no spool to wait for
        )

    def argv(self, conninfo: str, source: Path | None, sections: tuple[str, ...] = ()) -> list[str]:
        """The restore tool's argv; ``source`` ``None`` means it reads stdin."""
        if self.manifest.format == "plain":
            argv = [
                str(self.tool.path),
                "-X",
                "-q",
                "--no-password",
                "-v",
                "ON_ERROR_STOP=0",
                f"--dbname={conninfo}",
            ]
            return [*argv, "-f", str(source) if source is not None else "-"]
        argv = [str(self.tool.path), "--no-password", f"--dbname={conninfo}"]
        argv.extend(f"--section={section}" for section in sections)
        if self.jobs > 1 and source is not None and sections != ("pre-data",):
            argv.append(f"--jobs={self.jobs}")
        if self.drill:
            argv.extend(DRILL_FLAGS)
        if self.clean:
            argv.extend(("--clean", "--if-exists"))
        if source is not None:
            argv.append(str(source))
        return argv

    @property
    def connections(self) -> int:
        """Connections the restore holds at most, beside the tool's leader."""
        return max(self.jobs, self.load_jobs)

    def script_argv(self, source: Path | None) -> list[str]:
        """``pg_restore`` writing the data section as a script on stdout (:mod:`.dataload`)."""
        argv = [str(self.tool.path), "--section=data", "--file=-", *DRILL_FLAGS]
        return [*argv, str(source)] if source is not None else argv

    def list_argv(self, source: Path | None) -> list[str]:
        argv = [str(self.tool.path), "--list"]
        return [*argv, str(source)] if source is not None else argv


def describe(
    plan: RestorePlan, spec: ConnSpec, spool_dir: Path | None, before_restore: tuple[str, ...] = ()
) -> list[str]:
    """The exact commands of a restore, as a shell would run them (``--dry-run``).

    Steps pgwarden does in-process (SHA-256, decompression) are shown as their stock-tool
    equivalents, so that the listing is also a manual path.
    """
    m = plan.manifest
    q = shlex.quote
    conninfo = spec.tool_conninfo()
    lines = [f"sha256sum {q(str(plan.artifact))}  # must print {m.sha256}"]
    if m.format == "directory":
        lines[0] = f"# SHA-256 of each file of {plan.artifact} must match the manifest's 'files'"
    source: Path | None = plan.artifact
    producer = ""
    if plan.spools and spool_dir is not None:
        source = spool_dir / (plan.artifact.name.removesuffix(".zst") + ".restore.partial")
        lines.append(f"zstd -d -q -o {q(str(source))} {q(str(plan.artifact))}")
    elif plan.codec is not None:
        source = None
        tool = "zstd -dc" if plan.codec == "zstd" else "gunzip -c"
        producer = f"{tool} {q(str(plan.artifact))} | "
    if m.format != "plain":
        lines.append(shlex.join(plan.list_argv(source)) + " > /dev/null")
    lines.extend(before_restore)
    lines.append(producer + shlex.join(plan.argv(conninfo, source)))
    if plan.spools and spool_dir is not None:
        lines.append(f"rm {q(str(source))}")
    return lines


#: the pipe into a streamed restore tool: 1 MiB (Linux's default limit for a user) instead of
#: 64 KiB, 16 times fewer wake-ups of the tool and of the feeding thread on a busy machine
PIPE_BYTES = 1 << 20


def _feed(
    tool: process.RunningTool, chunks: Iterator[bytes], watch: StallWatch | None = None
) -> None:
    assert tool.stdin is not None
    with contextlib.suppress(OSError, AttributeError):  # not Linux, or a lower limit: as it is
        fcntl.fcntl(tool.stdin.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    try:
        for chunk in chunks:
            tool.stdin.write(chunk)
            if watch is not None:
                watch.moved(len(chunk))
    except BrokenPipeError:
        pass  # the tool stopped reading: its exit status says why
    finally:
        with contextlib.suppress(BrokenPipeError, OSError):
            tool.stdin.close()
        if isinstance(chunks, Generator):  # a tool that stopped early: the artifact closed now
            chunks.close()


def list_archive(
    plan: RestorePlan, staged: staging.Staged, cancel: threading.Event | None
) -> CheckResult:
    """``pg_restore --list``: the archive's table of contents is readable (a plain dump was
    decompressed whole by the checksum pass, its trailer checked)."""
    started = time.monotonic()
    argv = plan.list_argv(staged.source)
    lines = StderrLines()
    entries = [0]

    def count(chunk: bytes) -> None:
        entries[0] += chunk.count(b"\n")

    if staged.source is not None:
        outcome = process.run_tool(
            argv,
            env=local_tool_environment(),
            stdout=count,
            cancel=cancel,
            log=lines,
            name="pg_restore",
        )
    else:
        with process.start_tool(
            argv,
            env=local_tool_environment(),
            name="pg_restore",
            log=lines,
            cancel=cancel,
            stdin=process.PIPE,
        ) as tool:
            assert tool.stdout is not None
            reader = threading.Thread(
                target=_drain_counting, args=(tool.stdout, count), daemon=True
            )
            reader.start()
            # pg_restore stops reading after the table of contents: only the head is decompressed
            _feed(tool, staging.decompressed(plan.manifest, plan.artifact, cancel))
            outcome = tool.wait()
            reader.join()
    if outcome.cancelled:
        raise StepError("cancelled", "the drill was cancelled")
    if not outcome.ok:
        last = lines.lines[-1] if lines.lines else outcome.describe()
        raise StepError("archive", f"pg_restore --list cannot read the archive: {last}")
    detail = f"table of contents readable ({entries[0]} lines)"
    return CheckResult("archive", True, detail, time.monotonic() - started)


def _drain_counting(stream: Any, sink: Any) -> None:
    with contextlib.suppress(OSError, ValueError):
        while chunk := stream.read(process.CHUNK):
            sink(chunk)


@dataclass(frozen=True)
class _Run:
    """What every tool run of one restore shares."""

    plan: RestorePlan
    spec: ConnSpec
    env: dict[str, str]
    source: Path | None
    lines: StderrLines
    cancel: threading.Event | None
    stall_timeout: float | None
    loaded: list[copyload.Loaded]

    def tool(
        self, sections: tuple[str, ...] = (), source: Path | None = None
    ) -> process.ToolResult:
        """Run the restore tool once, under a stall watch (:mod:`pgwarden.pg.stallwatch`):
        progress is the bytes fed to its stdin, or its sessions working on the server."""
        tag = session_tag("restore")
        conninfo = self.spec.with_params(application_name=tag).tool_conninfo()
        source = source if source is not None else self.source
        argv = self.plan.argv(conninfo, source, sections)
        what = f"restoring ({', '.join(sections)})" if sections else "restoring"
        with stallwatch.watching(
            self.stall_timeout, doing=what, upstream=self.cancel, spec=self.spec, tag=tag
        ) as watch:
            result = self._run(argv, watch, source)
        if watch.stalled:
            # the step's name says "stalled" already: "stalled: no progress for 300 s while ..."
            raise StepError(STALLED, watch.stalled.removeprefix(f"{STALLED}: "))
        return result

    def data(self) -> process.ToolResult:
        """The data section through the loader (:mod:`.dataload`), over ``load_jobs``
        connections: the script tool's result (its exit, and the loader's errors in
        :attr:`lines`)."""
        load = dataload.DataLoad(
            argv=self.plan.script_argv(self.source),
            env=self.env,
            spec=self.spec,
            jobs=self.plan.load_jobs,
            manifest=self.plan.manifest,
            artifact=self.plan.artifact,
            source=self.source,
            cancel=self.cancel,
            stall_timeout=self.stall_timeout,
        )
        done = dataload.load_data(load, self.lines.add, self.lines)
        self.loaded.append(done.loaded)
        return done.tool

    def _run(self, argv: list[str], watch: StallWatch, source: Path | None) -> process.ToolResult:
        name, env, lines = self.plan.tool.name, self.env, self.lines
        if source is not None:
            return process.run_tool(argv, env=env, cancel=watch.cancel, log=lines, name=name)
        with process.start_tool(
            argv,
            env=env,
            name=name,
            log=lines,
            cancel=watch.cancel,
            stdin=process.PIPE,
            stdout=process.DEVNULL,
        ) as tool:
            chunks = staging.decompressed(self.plan.manifest, self.plan.artifact, watch.cancel)
            try:
                _feed(tool, chunks, watch)
            except StepError:
                if watch.stalled:  # the stall cancelled the decompression: it is the cause
                    tool.terminate_group()
                    return tool.wait()
                raise
            return tool.wait()


class _Phases:
    """How long each run of a drill's restore took: logged, and said in its result."""

    def __init__(self) -> None:
        self.took: list[tuple[str, float]] = []

    def timed(self, name: str, step: Callable[[], T]) -> T:
        started = time.monotonic()
        try:
            return step()
        finally:
            self.took.append((name, time.monotonic() - started))
            log.info("restore phase finished", phase=name, duration_s=round(self.took[-1][1], 3))

    def describe(self) -> str:
        return "phases: " + ", ".join(f"{name} {took:.1f} s" for name, took in self.took)


def _went_on(outcome: process.ToolResult, lines: StderrLines, server_major: int) -> bool:
    """Whether a drill's restore goes on after one of its runs: it exited cleanly, or it
    ignored only errors known to be harmless (``pg_restore`` exits 1 then)."""
    if outcome.ok:
        return True
    early = classify(lines.lines, plain=False, server_major=server_major, drill=True)
    return outcome.returncode == 1 and not outcome.cancelled and not early.errors


def _described(loaded: copyload.Loaded) -> str:
    rows = f"{loaded.rows:,} row{'s' * (loaded.rows != 1)}"
    return f"{rows} of {loaded.tables} table{'s' * (loaded.tables != 1)} loaded"


def run_restore(
    plan: RestorePlan,
    staged: staging.Staged,
    spec: ConnSpec,
    *,
    server_major: int,
    cancel: threading.Event | None = None,
    stall_timeout: float | None = None,
) -> CheckResult:
    """Restore into the database ``spec`` names; a ``restore`` result listing the errors.
    A tool run that makes no progress for ``stall_timeout`` seconds is cancelled:
    :class:`StepError` ``stalled``.

    A drill of an archive restores in two runs: the schema (``--section=pre-data``), then,
    once the still empty tables are made unlogged (:func:`scratch.unlog_tables`: no WAL for a
    database that is dropped anyway, none shipped to replicas or archives), the data and the
    indexes and constraints (``--section=data --section=post-data``) with ``--jobs``.
    """
    started = time.monotonic()
    lines = StderrLines()
    plain = plan.manifest.format == "plain"
    source = staged.source if not plain else None
    notes: list[str] = []
    with tool_environment(spec) as env:
        if plan.drill:
            # a scratch database need not survive a crash: no WAL flush at every commit
            env["PGOPTIONS"] = (env.get("PGOPTIONS", "") + " -c synchronous_commit=off").strip()
        run = _Run(plan, spec, env, source, lines, cancel, stall_timeout, [])
        phases = _Phases()
        if plan.drill and not plain:
            outcome = phases.timed("pre-data", lambda: run.tool(("pre-data",), plan.toc))
            if _went_on(outcome, lines, server_major):
                notes.append(
                    phases.timed("unlogged", lambda: scratch.unlog_tables(spec, stall_timeout))
                )
                if plan.load_jobs:
                    outcome = phases.timed("data", run.data)
                    if _went_on(outcome, lines, server_major):
                        outcome = phases.timed(
                            "post-data", lambda: run.tool(("post-data",), plan.toc)
                        )
                    notes.extend(_described(loaded) for loaded in run.loaded)
                else:
                    outcome = phases.timed(
                        "data and post-data", lambda: run.tool(("data", "post-data"))
                    )
            notes.append(phases.describe())
        else:
            outcome = run.tool()
    if outcome.cancelled:
        raise StepError("cancelled", "the drill was cancelled")
    name = plan.tool.name
    found = classify(lines.lines, plain=plain, server_major=server_major, drill=plan.drill)
    duration_s = time.monotonic() - started
    parallel = (source is not None or plan.toc is not None) and plan.jobs > 1
    how = f"{name} --jobs={plan.jobs}" if parallel else name
    if plan.drill and plan.load_jobs and not plain:
        how = f"{how} (data over {plan.load_jobs} connections)"
    # pg_restore exits 1 when it ignored errors; psql without ON_ERROR_STOP exits 0
    clean_exit = outcome.returncode == 0 or (
        outcome.returncode == 1 and not plain and found.ignored and not found.errors
    )
    extra = [n for n in (*notes, *found.notes) if n]
    tail = "; " + "; ".join(extra) if extra else ""
    if clean_exit and not found.errors:
        detail = f"{how} exited cleanly in {time.monotonic() - started:.1f} s"
        return CheckResult("restore", True, detail + tail, duration_s)
    count = len(found.errors)
    if found.errors:
        detail = (
            f"{how} {outcome.describe()} with {count} error{'s' * (count != 1)}: {found.errors[0]}"
        )
    else:
        last = lines.lines[-1] if lines.lines else "no message"
        detail = f"{how} {outcome.describe()}: {last}"
    return CheckResult(
        "restore",
        False,
        detail + tail,
        duration_s,
        expected="no errors",
        actual=found.errors[:MAX_ERROR_LINES],
    )
