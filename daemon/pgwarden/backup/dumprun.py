"""One ``pg_dump`` run beside the snapshot facts, writing into a partial artifact.

pg_dump runs with ``--snapshot`` of the exporting transaction, which stays open until it is
done; meanwhile the snapshot facts (row counts, pgvector probes) are collected on that
connection.  With the stream stage (:attr:`~pgwarden.archive.codecs.Stage.STREAM`), pg_dump's
stdout is parsed whole as it passes (:class:`~pgwarden.backup.readback.StreamCheck`), counted
for progress, compressed and written into storage on a writer thread; otherwise pg_dump writes
the partial itself.  A cancelled backup, a pg_dump that failed or timed out, or a failed facts
query raises :class:`~pgwarden.errors.BackupError` (or the tool's error); a dump that made no
progress for ``[targets.backup] stall_timeout`` (:mod:`pgwarden.pg.stallwatch`: bytes out of
pg_dump, the partial growing, pg_dump's sessions working) is cancelled and raises
:class:`~pgwarden.errors.StallError`.  ``[targets.backup] max_rate`` paces the stream's reads
(:mod:`pgwarden.backup.ratecap`): pg_dump and its server backend then wait on their pipe.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

import psycopg

from pgwarden.archive import compress
from pgwarden.archive.codecs import Codec, Stage
from pgwarden.backup import pgdump, readback
from pgwarden.backup.facts import Facts, SnapshotSession
from pgwarden.backup.ratecap import RateCap
from pgwarden.backup.request import BackupRequest
from pgwarden.config.rates import format_rate
from pgwarden.errors import BackupError, StallError, ToolError, describe
from pgwarden.logsetup import get_logger
from pgwarden.pg import process, stallwatch
from pgwarden.pg.binaries import Tool
from pgwarden.pg.conninfo import ConnSpec
from pgwarden.pg.roles import backup_grant_hint
from pgwarden.pg.stallwatch import StallWatch
from pgwarden.storage.base import Partial, WriteResult

log = get_logger("pgwarden.backup")


def run_dump(
    request: BackupRequest,
    session: SnapshotSession,
    argv: list[str],
    env: dict[str, str],
    plan: pgdump.DumpPlan,
    partial: Partial,
    restore_tool: Tool,
    watch: StallWatch,
) -> tuple[Facts, WriteResult | None]:
    """pg_dump and the snapshot facts side by side; the facts come from the exporting
    transaction, which stays open until pg_dump is done.  The write result is ``None`` when
    pg_dump wrote the file itself.  ``watch`` (:func:`dump_watch`) cancels a stalled dump:
    :class:`~pgwarden.errors.StallError`."""
    try:
        facts, written, result = _run(
            request, session, argv, env, plan, partial, restore_tool, watch
        )
    except Exception as exc:
        if watch.stalled:  # killing pg_dump broke the stream: the stall is the cause
            raise StallError(watch.stalled) from exc
        raise
    if watch.stalled:
        raise StallError(watch.stalled)
    if result.cancelled:
        raise BackupError("backup cancelled")
    if result.timed_out:
        raise BackupError(f"pg_dump did not finish within {request.target.backup.timeout} s")
    _check_dump(result)
    if facts is None:  # pg_dump succeeded after all
        raise BackupError("collecting snapshot facts was interrupted")
    return facts, written


@contextmanager
def dump_watch(
    request: BackupRequest, session: SnapshotSession, partial: Partial, tag: str
) -> Iterator[StallWatch]:
    """The stall watch of one dump: bytes from pg_dump's stdout (fed by the stream), the
    partial growing when pg_dump writes it itself, pg_dump's sessions (``tag``) or the
    snapshot session (its facts queries) working."""
    with stallwatch.watching(
        request.target.backup.stall_timeout,
        doing="dumping",
        upstream=request.cancel,
        spec=ConnSpec.from_target(request.target),
        tag=tag,
        pids=(session.conn.info.backend_pid,),
        probes=(stallwatch.growing(lambda: stallwatch.path_size(partial.path)),),
    ) as watch:
        yield watch


def _run(
    request: BackupRequest,
    session: SnapshotSession,
    argv: list[str],
    env: dict[str, str],
    plan: pgdump.DumpPlan,
    partial: Partial,
    restore_tool: Tool,
    watch: StallWatch,
) -> tuple[Facts | None, WriteResult | None, process.ToolResult]:
    streamed = plan.stage == Stage.STREAM
    with process.start_tool(
        argv,
        env=env,
        name="pg_dump",
        log=log,
        timeout=request.target.backup.timeout,
        cancel=watch.cancel,
        stdout=process.PIPE if streamed else process.DEVNULL,
    ) as tool:
        writer: Future[WriteResult] | None = None
        checker: readback.StreamCheck | None = None
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="dump-writer") as pool:
            try:
                if streamed:
                    assert tool.stdout is not None
                    checker = readback.StreamCheck(plan.format, restore_tool, watch.cancel)
                    cap = _cap(request, watch)
                    size = cap.read_size if cap is not None else readback.READ_CHUNK
                    raw = _counting(checker.chunks(tool.stdout, size), request, watch, cap)
                    chunks = _compressed(raw, plan)
                    writer = pool.submit(request.storage.write_stream, partial, chunks)
                facts = _collect_facts(request, session, tool, watch.cancel)
                written = writer.result() if writer is not None else None
                result = tool.wait()
                if checker is not None and result.ok:
                    checker.finish()
            finally:
                if checker is not None:
                    checker.close()
    return facts, written, result


def _check_dump(result: process.ToolResult) -> None:
    """Raise pg_dump's error, naming the missing grant when it was refused one."""
    hint = None if result.ok else backup_grant_hint(result.stderr_tail)
    if hint is not None:
        message = f"{result.describe()}: {hint}"
        raise ToolError(result.tool, message, result.returncode, result.stderr_tail)
    process.check(result)


def _collect_facts(
    request: BackupRequest,
    session: SnapshotSession,
    tool: process.RunningTool,
    cancel: threading.Event | None,
) -> Facts | None:
    """The snapshot facts while pg_dump runs; a failed query stops pg_dump.  ``None`` when
    pg_dump failed first: its error, not the cancelled query's, says why."""
    settings = request.target.backup
    done = threading.Event()
    watcher = threading.Thread(
        target=_cancel_facts_when_needed,
        args=(cancel, tool, session, done),
        name="facts-watch",
        daemon=True,
    )
    watcher.start()
    try:
        return session.collect(
            mode=settings.row_counts,
            exact_max_bytes=settings.exact_count_max_bytes,
            probes=settings.vector_probes,
            probe_k=settings.vector_probe_k,
        )
    except psycopg.Error as exc:
        if tool.returncode not in (None, 0) and not request.cancelled:
            return None  # pg_dump failed first (and the watcher cancelled this query)
        tool.terminate_group()
        if request.cancelled:
            raise BackupError("backup cancelled") from exc
        hint = backup_grant_hint(describe(exc))
        message = f"collecting snapshot facts failed: {describe(exc)}"
        raise BackupError(f"{message}: {hint}" if hint else message) from exc
    finally:
        done.set()


def _cancel_facts_when_needed(
    cancel: threading.Event | None,
    tool: process.RunningTool,
    session: SnapshotSession,
    done: threading.Event,
) -> None:
    """Interrupt the facts queries when the backup is cancelled or pg_dump has failed, so that
    a query waiting on a lock cannot hold a stopping daemon."""
    while not done.wait(0.1):
        stopped = cancel is not None and cancel.is_set()  # the caller's cancel, or a stall
        if stopped or tool.returncode not in (None, 0):
            session.conn.cancel_safe()
            return


def _compressed(raw: Iterator[memoryview], plan: pgdump.DumpPlan) -> Iterator[compress.Chunk]:
    if plan.codec == Codec.ZSTD:
        return compress.zstd_compress(raw, plan.level or pgdump.DEFAULT_ZSTD_LEVEL)
    if plan.codec == Codec.GZIP:
        return compress.gzip_compress(raw, plan.level or pgdump.DEFAULT_GZIP_LEVEL)
    return compress.passthrough(raw)


def _cap(request: BackupRequest, watch: StallWatch) -> RateCap | None:
    """The read-rate cap of this dump (``[targets.backup] max_rate``), ``None`` when off."""
    rate = request.target.backup.max_rate
    if rate <= 0:
        return None
    log.info("reading pg_dump's output at a capped rate", max_rate=format_rate(rate))
    return RateCap(rate, watch)


def _counting(
    chunks: Iterator[memoryview],
    request: BackupRequest,
    watch: StallWatch,
    cap: RateCap | None = None,
) -> Iterator[memoryview]:
    """The chunks, counted for progress and the stall watch, and paced by ``cap``."""
    total = 0
    last = began = time.monotonic()
    for chunk in chunks:
        size = len(chunk)
        total += size
        watch.moved(size)
        now = time.monotonic()
        if now - last >= 0.5:
            request.report(phase="dumping", bytes=total)
            last = now
        yield chunk
        if cap is not None:
            cap.consumed(size)
    request.report(phase="dumping", bytes=total)
    if cap is not None:
        elapsed = time.monotonic() - began
        log.info(
            "pg_dump's output read at a capped rate",
            max_rate=format_rate(cap.rate),
            bytes=total,
            duration_s=round(elapsed, 1),
            rate=format_rate(int(total / elapsed) if elapsed > 0 else 0),
            held_back_s=round(cap.waited_s, 1),
        )
