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

from pgwarden.config import BackupSettings
from pgwarden.pg.binaries import Tool

DEFAULT_ZSTD_LEVEL = 1
DEFAULT_GZIP_LEVEL = 6


@dataclass(frozen=True)
class DumpPlan:
    format: str  # custom | directory | plain
    extension: str  # dump | dump.zst | dir | sql.gz
    stage: str  # "stream" (pgwarden compresses stdout) or "pg_dump" (pg_dump writes the file)
    codec: str  # zstd | gzip | none
    level: int | None
    pg_dump_compress: str  # the --compress value given to pg_dump
    jobs: int

    @property
    def compression_label(self) -> str:
        return self.codec if self.level is None else f"{self.codec}:{self.level}"

    @property
    def is_directory(self) -> bool:
        return self.format == "directory"


def plan_dump(settings: BackupSettings, tool: Tool) -> DumpPlan:
    level = settings.compression_level
    codec = settings.compression
    if settings.format == "plain":
        if codec == "none":
            return DumpPlan("plain", "sql", "stream", "none", None, "0", 1)
        return DumpPlan(
            "plain",
            "sql.gz",
            "stream",
            "gzip",
            level if level is not None else DEFAULT_GZIP_LEVEL,
            "0",
            1,
        )
    if settings.format == "directory":
        if codec == "none":
            return DumpPlan("directory", "dir", "pg_dump", "none", None, "0", settings.jobs)
        if codec == "zstd" and tool.major >= 16:
            lvl = level if level is not None else DEFAULT_ZSTD_LEVEL
            return DumpPlan(
                "directory", "dir", "pg_dump", "zstd", lvl, f"zstd:{lvl}", settings.jobs
            )
        lvl = min(level if level is not None else 1, 9)
        return DumpPlan("directory", "dir", "pg_dump", "gzip", lvl, str(lvl), settings.jobs)
    # custom
    if codec == "none":
        return DumpPlan("custom", "dump", "pg_dump", "none", None, "0", 1)
    if codec == "gzip":
        lvl = min(level if level is not None else DEFAULT_GZIP_LEVEL, 9)
        return DumpPlan("custom", "dump", "pg_dump", "gzip", lvl, str(lvl), 1)
    lvl = level if level is not None else DEFAULT_ZSTD_LEVEL
    return DumpPlan("custom", "dump.zst", "stream", "zstd", lvl, "0", 1)


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
    fmt = {"custom": "c", "directory": "d", "plain": "p"}[plan.format]
    argv = [str(tool.path), f"--format={fmt}", "--no-password", f"--dbname={conninfo}"]
    if plan.format != "plain":
        argv.append(f"--compress={plan.pg_dump_compress}")
    if snapshot:
        argv.append(f"--snapshot={snapshot}")
    if plan.format == "directory" and plan.jobs > 1:
        argv.append(f"--jobs={plan.jobs}")
    if output is not None:
        argv.append(f"--file={output}")
    argv.extend(extra_args)
    return argv


def restore_hint(plan: DumpPlan, artifact: str, database: str) -> tuple[str, ...]:
    """How to restore this artifact with stock tools only (written into the manifest)."""
    if plan.format == "plain":
        if plan.codec == "gzip":
            return (
                f"createdb {database}_restored",
                f"gunzip -c {artifact} | psql -v ON_ERROR_STOP=1 -d {database}_restored",
            )
        return (
            f"createdb {database}_restored",
            f"psql -v ON_ERROR_STOP=1 -d {database}_restored -f {artifact}",
        )
    if plan.stage == "stream" and plan.codec == "zstd":
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
