"""``pg_dump``: how a backup is dumped (format, compression, file name) and its argv.

:func:`plan_dump` turns ``[targets.backup]`` and the pg_dump binary found into a
:class:`DumpPlan`; :func:`dump_argv` builds the argv.  pgwarden sets ``--format``,
``--compress``, ``--file``, ``--jobs`` and ``--snapshot`` itself; config validation already
refused ``extra_args`` that would override them.

Compression, decided by measurement (``benchmarks/backup.py``):

* ``custom`` + ``auto``/``zstd``: ``pg_dump -Fc -Z0`` streamed through pgwarden's
  multi-threaded zstd stage into ``NAME.dump.zst`` — about as fast as the raw dump, where
  pg_dump's own single-threaded gzip is ~10x slower.  Stock restore:
  ``zstd -dc NAME.dump.zst | pg_restore -d DB`` (or decompress first for ``pg_restore -j``).
* ``custom`` + ``gzip``: pg_dump's own compression, ``NAME.dump`` (``pg_restore -j`` directly).
* ``custom`` + ``none``: ``NAME.dump``, uncompressed.
* ``directory``: pg_dump's own compression per file (gzip, or zstd when ``compression =
  "zstd"`` and pg_dump supports it), ``--jobs`` in parallel, ``NAME.dir/``.
* ``plain``: ``pg_dump -Fp`` through the parallel gzip stage into ``NAME.sql.gz``, so that the
  strategy's own ``gunzip -c NAME.sql.gz | psql DB`` restores it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pgwarden.archive.codecs import Codec, Stage
from pgwarden.config import BackupSettings
from pgwarden.config.formats import BackupFormat, streamed
from pgwarden.pg.binaries import Tool

DEFAULT_ZSTD_LEVEL = 1
DEFAULT_GZIP_LEVEL = 6
_FORMAT_FLAG = {BackupFormat.CUSTOM: "c", BackupFormat.DIRECTORY: "d", BackupFormat.PLAIN: "p"}


@dataclass(frozen=True)
class DumpPlan:
    format: BackupFormat
    extension: str  # dump | dump.zst | dir | sql.gz | sql
    stage: Stage
    codec: Codec
    level: int | None
    pg_dump_compress: str  # the --compress value given to pg_dump
    jobs: int

    @property
    def compression_label(self) -> str:
        """The manifest's ``compression``: ``zstd:1``, ``gzip:6``, ``none``."""
        return str(self.codec) if self.level is None else f"{self.codec}:{self.level}"

    @property
    def is_directory(self) -> bool:
        return self.format == BackupFormat.DIRECTORY


def plan_dump(settings: BackupSettings, tool: Tool) -> DumpPlan:
    fmt = BackupFormat(settings.format)
    if fmt == BackupFormat.PLAIN:
        return _plain(settings)
    if fmt == BackupFormat.DIRECTORY:
        return _directory(settings, tool)
    return _custom(settings)


def _plain(settings: BackupSettings) -> DumpPlan:
    """``pg_dump -Fp`` through the stream stage: gzip (``.sql.gz``) unless ``none``."""
    level = settings.compression_level
    if settings.compression == Codec.NONE:
        return DumpPlan(BackupFormat.PLAIN, "sql", Stage.STREAM, Codec.NONE, None, "0", 1)
    lvl = level if level is not None else DEFAULT_GZIP_LEVEL
    return DumpPlan(BackupFormat.PLAIN, "sql.gz", Stage.STREAM, Codec.GZIP, lvl, "0", 1)


def _directory(settings: BackupSettings, tool: Tool) -> DumpPlan:
    """pg_dump compresses each file itself: zstd when asked and pg_dump >= 16, else gzip."""
    level, codec, jobs = settings.compression_level, settings.compression, settings.jobs
    fmt, stage = BackupFormat.DIRECTORY, Stage.PG_DUMP
    if codec == Codec.NONE:
        return DumpPlan(fmt, "dir", stage, Codec.NONE, None, "0", jobs)
    if codec == Codec.ZSTD and tool.major >= 16:
        lvl = level if level is not None else DEFAULT_ZSTD_LEVEL
        return DumpPlan(fmt, "dir", stage, Codec.ZSTD, lvl, f"zstd:{lvl}", jobs)
    lvl = min(level if level is not None else 1, 9)
    return DumpPlan(fmt, "dir", stage, Codec.GZIP, lvl, str(lvl), jobs)


def _custom(settings: BackupSettings) -> DumpPlan:
    """``auto``/``zstd`` through the stream stage; ``none`` and ``gzip`` by pg_dump itself."""
    level, codec, fmt = settings.compression_level, settings.compression, BackupFormat.CUSTOM
    if streamed(fmt, codec):
        lvl = level if level is not None else DEFAULT_ZSTD_LEVEL
        return DumpPlan(fmt, "dump.zst", Stage.STREAM, Codec.ZSTD, lvl, "0", 1)
    if codec == Codec.NONE:
        return DumpPlan(fmt, "dump", Stage.PG_DUMP, Codec.NONE, None, "0", 1)
    lvl = min(level if level is not None else DEFAULT_GZIP_LEVEL, 9)
    return DumpPlan(fmt, "dump", Stage.PG_DUMP, Codec.GZIP, lvl, str(lvl), 1)


def dump_argv(
    tool: Tool,
    plan: DumpPlan,
    *,
    conninfo: str,
    snapshot: str | None,
    output: Path | None,
    extra_args: tuple[str, ...] = (),
) -> list[str]:
    """argv for pg_dump; ``output`` None means stdout.  The conninfo holds no password."""
    argv = [
        str(tool.path),
        f"--format={_FORMAT_FLAG[plan.format]}",
        "--no-password",
        f"--dbname={conninfo}",
    ]
    if plan.format != BackupFormat.PLAIN:
        argv.append(f"--compress={plan.pg_dump_compress}")
    if snapshot:
        argv.append(f"--snapshot={snapshot}")
    if plan.format == BackupFormat.DIRECTORY and plan.jobs > 1:
        argv.append(f"--jobs={plan.jobs}")
    if output is not None:
        argv.append(f"--file={output}")
    argv.extend(extra_args)
    return argv


def restore_hint(plan: DumpPlan, artifact: str, database: str) -> tuple[str, ...]:
    """How to restore this artifact with stock tools only (written into the manifest)."""
    if plan.format == BackupFormat.PLAIN:
        if plan.codec == Codec.GZIP:
            return (
                f"createdb {database}_restored",
                f"gunzip -c {artifact} | psql -v ON_ERROR_STOP=1 -d {database}_restored",
            )
        return (
            f"createdb {database}_restored",
            f"psql -v ON_ERROR_STOP=1 -d {database}_restored -f {artifact}",
        )
    if plan.stage == Stage.STREAM and plan.codec == Codec.ZSTD:
        plain = artifact.removesuffix(".zst")
        return (
            f"createdb {database}_restored",
            f"zstd -d -o {plain} {artifact}",
            f"pg_restore --jobs=2 --no-owner -d {database}_restored {plain}",
        )
    return (
        f"createdb {database}_restored",
        f"pg_restore --jobs=2 --no-owner -d {database}_restored {artifact}",
    )
