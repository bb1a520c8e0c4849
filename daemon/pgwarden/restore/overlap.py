"""A drill's checksum beside its restore, and how a drill's ``.dump.zst`` reaches pg_restore.

A drill restores into a scratch database that is dropped whatever happens, so when its
restore reads the artifact itself (``pg_restore`` in place, or the ``.dump.zst`` decompressed
straight into a serial ``pg_restore``) the SHA-256 pass need not come first: it runs on a
thread of its own (:class:`PendingChecksum`) while the archive is restored and checked, and
the verdict needs both -- a checksum that differs from the manifest's fails the drill even
when the restore and every check passed, and is reported before any other failure (a damaged
file usually breaks the restore too; the checksum names the cause).  A drill that spools
(``pg_restore --jobs`` from a decompressed copy) hashes while it spools, as before, and
``pgwarden restore`` stays checksum-first (:mod:`.real`).

:func:`drill_jobs` chooses between spooling and streaming (``restore_mode = "auto"``): a
database that is almost all one table (:data:`DOMINANT_SHARE` of its bytes) gains nothing
from a parallel restore -- one worker copies that table while the other waits -- so its
``.dump.zst`` streams into a serial ``pg_restore`` and skips the spool's write and read
(``benchmarks/verify.py``, shape ``one_table``); any other database spools for ``--jobs``.
A drill that splits its tables over its connections (``[targets.verify] split_tables``, the
default: :mod:`.copyload`) streams every ``.dump.zst``, whatever its shape
(:func:`plan_drill`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import TracebackType

from pgwarden.archive.manifest import Manifest
from pgwarden.config import TargetConfig
from pgwarden.logsetup import get_logger
from pgwarden.pg.binaries import Tool
from pgwarden.restore import scratch, staging
from pgwarden.restore.outcome import CheckResult, StepError
from pgwarden.restore.restoreplan import RestorePlan

log = get_logger("pgwarden.verify")

#: a table holding at least this share of the database's bytes streams instead of spooling
DOMINANT_SHARE = 0.75
#: below this many bytes of table data the choice makes no difference: spool as configured
STREAM_MIN_BYTES = 64 << 20


def dominant_table(manifest: Manifest) -> bool:
    """Whether one table holds :data:`DOMINANT_SHARE` of a database big enough to matter."""
    sizes = [t.bytes for t in manifest.tables]
    total = sum(sizes)
    return total >= STREAM_MIN_BYTES and max(sizes) >= DOMINANT_SHARE * total


def drill_jobs(restore_mode: str, manifest: Manifest, configured: int) -> int:
    """``pg_restore --jobs`` for a drill: 1 streams a ``.dump.zst``, more spools it."""
    if restore_mode == "stream":
        return 1
    streams = staging.codec_of(manifest) == "zstd" and manifest.format == "custom"
    if restore_mode == "auto" and streams and manifest.tables and dominant_table(manifest):
        return 1
    return configured


def plan_drill(
    target: TargetConfig,
    artifact: Path,
    manifest: Manifest,
    tool: Tool,
    headroom: scratch.Headroom,
    restore_mode: str = "auto",
) -> tuple[RestorePlan, str]:
    """A drill's restore plan for the verification server's free connections, and the
    ``headroom`` step's sentence saying why.  ``restore_mode`` (``spool``, ``stream``) forces
    how an unsplit drill reads a ``.dump.zst``."""
    configured = target.verify.jobs
    connections, note = scratch.plan_jobs(configured, headroom)
    split = target.verify.split_tables and connections > 1 and manifest.format != "plain"
    if split:
        # a split load streams every archive: --jobs only builds the indexes and constraints
        note += f"; data loaded over {connections} connections, tables split between them"
        return RestorePlan(manifest, artifact, tool, jobs=connections, load_jobs=connections), note
    wanted = drill_jobs(restore_mode, manifest, configured)
    if wanted < configured and restore_mode == "auto":
        note += "; one table holds most of the data: streamed, not spooled"
    return RestorePlan(manifest, artifact, tool, jobs=min(wanted, connections)), note


def describe_mode(plan: RestorePlan, staged: staging.Staged) -> str:
    """How the drill's archive reached the server, for its report."""
    if plan.manifest.format == "plain":
        return f"{plan.codec or 'plain'} stream into psql"
    split = f"; data over {plan.load_jobs} connections" if plan.load_jobs else ""
    if staged.source is None:
        if plan.toc is not None and plan.jobs > 1:
            return f"streamed into pg_restore, post-data --jobs={plan.jobs}{split}"
        serial = "streamed into pg_restore" if split else "streamed into a serial pg_restore"
        return serial + split
    if staged.spool is not None:
        return f"spooled, pg_restore --jobs={plan.jobs}{split}"
    return f"pg_restore --jobs={plan.jobs} from the artifact{split}"


@contextmanager
def toc_head(plan: RestorePlan, directory: Path) -> Iterator[RestorePlan]:
    """``plan`` with the table of contents of its streamed ``.dump.zst`` written apart
    (:func:`staging.write_toc_head`) for a split drill's schema sections, removed afterwards;
    ``plan`` as it is for any other drill."""
    if not (plan.load_jobs and plan.codec is not None and plan.manifest.format == "custom"):
        yield plan
        return
    toc = staging.write_toc_head(plan.manifest, plan.artifact, directory)
    try:
        yield replace(plan, toc=toc)
    finally:
        if toc is not None:
            toc.unlink(missing_ok=True)


def overlaps(manifest: Manifest, spools: bool) -> bool:
    """Whether a drill's checksum runs beside its restore: the restore reads the artifact
    itself (not a spool, not a plain dump, whose checksum pass also finds its trailer)."""
    return not spools and manifest.format in ("custom", "directory")


class PendingChecksum:
    """The artifact's SHA-256 on a thread (:func:`staging.checksum_and_stage` without a
    spool), from the start of the block; :meth:`result` waits for it."""

    def __init__(self, manifest: Manifest, artifact: Path) -> None:
        self.staged = staging.Staged(
            "", 0, None if staging.codec_of(manifest) else artifact, notes=[]
        )
        self._manifest = manifest
        self._artifact = artifact
        self._stop = threading.Event()
        self._done: staging.Staged | None = None
        self._error: BaseException | None = None
        self._started = time.monotonic()
        self._finished = self._started
        self._thread = threading.Thread(target=self._run, name="drill-sha256", daemon=True)

    def _run(self) -> None:
        try:
            self._done = staging.checksum_and_stage(
                self._manifest, self._artifact, spool_dir=None, cancel=self._stop
            )
        except BaseException as exc:  # noqa: BLE001 - handed to result() on the drill's thread
            self._error = exc
        self._finished = time.monotonic()

    def __enter__(self) -> PendingChecksum:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()  # a drill that ended early (cancelled, interrupted) does not wait
        self._thread.join()

    def result(self) -> CheckResult:
        """The ``checksum`` result; raises :class:`StepError` (``checksum``) when the file is
        not the one the manifest describes."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._done is not None
        return CheckResult(
            "checksum",
            True,
            f"sha256 {self._done.sha256[:16]}... ({self._done.size_bytes} bytes), "
            "computed beside the restore",
            duration_s=self._finished - self._started,
        )

    def blame(self, failure: BaseException) -> None:
        """After the restore or a check failed: raise the checksum's failure instead when the
        file differs from the manifest's (the cause); return when it matches."""
        if isinstance(failure, StepError) and failure.step == "cancelled":
            return  # the drill was cancelled: no verdict, no wait
        self._thread.join()
        if isinstance(self._error, StepError) and self._error.step == "checksum":
            log.info("the restore failed on an artifact whose checksum differs", error=str(failure))
            raise self._error from failure
