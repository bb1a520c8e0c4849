"""``pg_restore`` and ``psql`` for restores: the run and its errors (the plan and the exact
commands: :mod:`pgwarden.restore.restoreplan`).

Every line the tool writes on stderr is kept; errors are counted and reported, the known
harmless ones apart (:mod:`pgwarden.restore.toolerrors`).

A drill of an archive restores in phases: the schema (``--section=pre-data``), the tables
made unlogged, the data -- by ``pg_restore --jobs`` itself, or split over the drill's
connections (:mod:`pgwarden.restore.dataload`) -- then the indexes and constraints.

Each tool run is watched for stalls (``[targets.verify] stall_timeout``, for drills and
``pgwarden restore`` alike): progress is the bytes fed to the tool's stdin (a streamed
restore) or the tool's sessions -- tagged with an ``application_name`` of their own --
working on the server (an index build or a foreign-key check reads nothing for minutes);
a session waiting on another's lock is not working (:mod:`pgwarden.pg.stallwatch`).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pgwarden.logsetup import get_logger
from pgwarden.pg import process, stallwatch
from pgwarden.pg.conninfo import ConnSpec, tool_environment
from pgwarden.pg.environment import local_tool_environment
from pgwarden.pg.stallwatch import StallWatch, session_tag
from pgwarden.restore import copyload, dataload, scratchtables, staging
from pgwarden.restore.outcome import STALLED, CheckResult, StepError
from pgwarden.restore.restoreplan import (
    DRILL_FLAGS,
    RestorePlan,
    describe,
    dump_major,
    find_restore_tool,
)
from pgwarden.restore.toolerrors import MAX_ERROR_LINES, StderrLines, classify

log = get_logger("pgwarden.restore")
T = TypeVar("T")

__all__ = [  # the plan is re-exported: callers name it pgrestore.RestorePlan
    "DRILL_FLAGS",
    "RestorePlan",
    "describe",
    "dump_major",
    "find_restore_tool",
    "list_archive",
    "run_restore",
]


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
            dataload.feed(tool, staging.decompressed(plan.manifest, plan.artifact, cancel))
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
                dataload.feed(tool, chunks, watch)
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


def _drill_phases(run: _Run, server_major: int, notes: list[str]) -> process.ToolResult:
    """A drill's restore of an archive, phase by phase (see :func:`run_restore`); what each
    took, and what the split load loaded, go to ``notes``."""
    plan, lines, phases = run.plan, run.lines, _Phases()
    outcome = phases.timed("pre-data", lambda: run.tool(("pre-data",), plan.toc))
    if _went_on(outcome, lines, server_major):
        notes.append(
            phases.timed(
                "unlogged", lambda: scratchtables.prepare_tables(run.spec, run.stall_timeout)
            )
        )
        if plan.load_jobs:
            outcome = phases.timed("data", run.data)
            if _went_on(outcome, lines, server_major):
                outcome = phases.timed("post-data", lambda: run.tool(("post-data",), plan.toc))
            notes.extend(_described(loaded) for loaded in run.loaded)
        else:
            outcome = phases.timed("data and post-data", lambda: run.tool(("data", "post-data")))
    notes.append(phases.describe())
    return outcome


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

    A drill of an archive restores the schema (``--section=pre-data``), then, once the still
    empty tables are made unlogged (:func:`scratchtables.prepare_tables`: no WAL for a
    database that is dropped anyway, none shipped to replicas or archives), the data and the
    indexes and constraints: ``--section=data --section=post-data`` with ``--jobs``, or the
    data split over the connections (:mod:`.dataload`) and then ``--section=post-data``.
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
        if plan.drill and not plain:
            outcome = _drill_phases(run, server_major, notes)
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
