"""How one archive is restored: the tool, its parallelism and flags (:class:`RestorePlan`),
and the exact commands a shell would run for it (:func:`describe`, ``--dry-run``).

Per format (see :mod:`pgwarden.backup.pgdump`):

* ``.dump`` (pg_dump's own compression, or none) and ``.dir``: ``pg_restore --jobs=N`` reads
  the artifact in place;
* ``.dump.zst`` (pg_dump ``-Z0`` through pgwarden's zstd stage): with ``--jobs`` > 1 it is
  decompressed into a spool file beside the storage during the checksum pass
  (:mod:`pgwarden.restore.staging`), then ``pg_restore --jobs=N`` reads that; with one job, or
  when the spool does not fit, it is decompressed in-process straight into a serial
  ``pg_restore`` (``benchmarks/verify.py`` measures both: streaming took 1.2-1.5x as long as
  spooling for ``--jobs=2`` on its 1.2 GB database).  A drill that splits tables over its
  connections (:mod:`pgwarden.restore.copyload`) streams it instead, its schema sections read
  from the table of contents written apart (:func:`staging.write_toc_head`);
* ``.sql.gz`` / ``.sql``: decompressed in-process into ``psql``.

Drills restore with ``--no-owner --no-privileges --no-tablespaces --no-subscriptions
--no-publications`` (the verification server need not have the roles or tablespaces, and an
unlogged table cannot be published); ``pgwarden restore`` keeps owners and privileges.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from pgwarden.archive.manifest import Manifest
from pgwarden.pg.binaries import Tool, find_tool
from pgwarden.pg.conninfo import ConnSpec
from pgwarden.restore import staging

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
