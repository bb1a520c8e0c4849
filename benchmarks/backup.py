"""Backup speed and size: pgwarden against the strategy's ``pg_dump | gzip`` and the raw dump.

Runs on the database shapes of :mod:`benchmarks.shapes` (database ``bench``, built once and
cached): ``vectors`` (pgbench + a pgvector ``documents`` table, the first benchmark's),
``app`` (the issue's application database: pgbench + ``users`` with jsonb + ``documents``
with a text body, jsonb, ``vector(384)``, a foreign key and ivfflat; ~1.2 GB) and
``one_table`` (pgbench alone).  For each shape, ``--runs`` rounds, the variants interleaved:

* ``strategy``: ``pg_dump DB | gzip > x.sql.gz`` (the seed's cron job);
* ``raw``: ``pg_dump -Fc -Z0 > /dev/null`` (the dump's own speed limit);
* ``pgwarden``: ``pgwarden backup`` (custom format, zstd stage, sha256, exact row counts,
  vector probes, the archive proven whole before publishing) through the real CLI, a one-shot
  process that pays Python's start-up and its imports (the catalog's SQLAlchemy) every time;
* ``daemon``: the same backup as the daemon takes it on schedule: ``pgwarden ctl backup --wait``
  to a ``pgwarden run`` started once per shape (the wall time includes the small ``ctl``
  client's start-up; ``daemon job`` is the job's own duration as the daemon recorded it).

Prints per shape the median wall time, the machine's busy CPU-seconds (all processes:
pg_dump, the server, pgwarden; from ``/proc/stat``, so a 2-core wall-clock result can be
explained) and output size of each variant, and the ratios the issue sets as goals:
pgwarden <= 0.2x the strategy's time with output no larger, and <= 1.5x the raw dump
(moonshot 1.3x).

    .venv/bin/python benchmarks/backup.py [--shape vectors|app|one_table|all] [--runs 3]
        [--scale N --users N --documents N]   # sizes; default: the shape's full size
        [--compare-with DIR]   # also DIR's pgwarden (a worktree of an older commit), interleaved

``--compare-with`` adds the variant ``before``: ``pgwarden backup`` of the checkout in DIR
(``git worktree add --detach DIR <commit>``), run the same way, so that a change is measured
before and after in one run.
"""

from __future__ import annotations

import argparse
import compileall
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.scale_common import RunningDaemon  # noqa: E402
from benchmarks.shapes import DB, Sizes, cached_server  # noqa: E402
from tests.pgservers import PgServer  # noqa: E402

VARIANTS = ("strategy", "raw", "pgwarden", "daemon")
#: each shape's full size: ``vectors`` as the first benchmark built it, the others the issue's
FULL = {
    "vectors": Sizes(scale=60, documents=100_000),
    "app": Sizes(),
    "one_table": Sizes(),
}
GOALS = (
    ("pgwarden / strategy time", "pgwarden", "strategy", "time", 0.2, None),
    ("pgwarden / strategy size", "pgwarden", "strategy", "size", 1.0, None),
    ("pgwarden / raw dump time", "pgwarden", "raw", "time", 1.5, 1.3),
    ("daemon / raw dump time", "daemon", "raw", "time", 1.5, 1.3),
)


def busy_cpu_s() -> float:
    """CPU-seconds the machine has been busy (user, nice, system, irq, softirq) since boot."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:8]]
    return (fields[0] + fields[1] + fields[2] + fields[5] + fields[6]) / os.sysconf("SC_CLK_TCK")


@dataclass
class Samples:
    """One variant's measurements, one entry per round."""

    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    size: list[int] = field(default_factory=list)

    def median(self, what: str) -> float:
        values = {"time": self.seconds, "cpu": self.cpu, "size": self.size}[what]
        return float(statistics.median(values)) if values else 0.0


def measured(samples: Samples, command: str | list[str], **kwargs: object) -> None:
    busy, start = busy_cpu_s(), time.monotonic()
    subprocess.run(command, check=True, **kwargs)  # type: ignore[call-overload]
    samples.seconds.append(time.monotonic() - start)
    samples.cpu.append(busy_cpu_s() - busy)


def write_config(work: Path, server: PgServer) -> Path:
    config = work / "pgwarden.toml"
    config.write_text(
        f'[daemon]\nstate_dir = "{work}/state"\nlog_level = "warning"\n'
        f'socket = "{work}/ctl.sock"\n'
        '[metrics]\nlisten = "127.0.0.1:0"\n'
        f'[storage]\npath = "{work}/backups"\n'
        f'[[targets]]\nname = "bench"\ndsn = "{server.uri(DB)}"\n'
        f'bin_dir = "{server.bin_dir}"\n'
    )
    return config


def run_shape(shape: str, sizes: Sizes, runs: int, before: Path | None) -> dict[str, Samples]:
    """``runs`` interleaved rounds of the variants on a fresh copy of ``shape``."""
    results = {key: Samples() for key in VARIANTS + (("before",) if before else ())}
    with (
        cached_server(shape, sizes) as server,
        tempfile.TemporaryDirectory(prefix="pgwarden-bench-work-", dir="/tmp") as tmp,
    ):
        work = Path(tmp)
        size = server.execute(f"SELECT pg_database_size('{DB}')")[0][0]
        print(f"\n{shape} {sizes}: {int(size) / 1e9:.2f} GB database")  # type: ignore[call-overload]
        config = write_config(work, server)
        pg_dump = server.bin_dir / "pg_dump"
        pgwarden = Path(sys.executable).parent / "pgwarden"
        dsn = shlex.quote(server.dsn(DB))
        backups = work / "backups" / "bench"
        daemon = RunningDaemon(work, config)
        ctl = [str(pgwarden), "ctl", "backup", "-c", str(config), "--wait", "bench"]
        for run in range(runs):
            out = work / f"strategy-{run}.sql.gz"
            measured(results["strategy"], f"{pg_dump} {dsn} | gzip > {out}", shell=True)
            results["strategy"].size.append(out.stat().st_size)
            out.unlink()
            measured(results["raw"], f"{pg_dump} -Fc -Z0 {dsn} > /dev/null", shell=True)
            results["raw"].size.append(0)
            measured(
                results["pgwarden"],
                [str(pgwarden), "backup", "-c", str(config), "bench"],
                stdout=subprocess.DEVNULL,
            )
            made = sorted(backups.glob("*.zst"))[-1]
            results["pgwarden"].size.append(made.stat().st_size)
            for leftover in backups.iterdir():
                leftover.unlink()
            measured(results["daemon"], ctl, stdout=subprocess.DEVNULL)
            made = sorted(backups.glob("*.zst"))[-1]
            results["daemon"].size.append(made.stat().st_size)
            for leftover in backups.iterdir():
                leftover.unlink()
            if before is not None:
                measured(
                    results["before"], older_pgwarden(before, config), stdout=subprocess.DEVNULL
                )
                made = sorted(backups.glob("*.zst"))[-1]
                results["before"].size.append(made.stat().st_size)
                for leftover in backups.iterdir():
                    leftover.unlink()
            print(
                f"run {run + 1}: "
                + ", ".join(
                    f"{k} {v.seconds[-1]:.1f} s ({v.cpu[-1]:.1f} CPU-s)" for k, v in results.items()
                ),
                flush=True,
            )
        daemon.stop()
    return results


def older_pgwarden(checkout: Path, config: Path) -> list[str]:
    """argv of ``pgwarden backup`` from another checkout's sources (same interpreter)."""
    code = (
        f"import sys; sys.path.insert(0, {str(checkout / 'daemon')!r}); "
        "from pgwarden.cli import main; sys.exit(main())"
    )
    return [sys.executable, "-c", code, "backup", "-c", str(config), "bench"]


def report(shape: str, results: dict[str, Samples], runs: int) -> None:
    print(f"\n{shape}: median of {runs} interleaved runs, 2-core machine")
    print(f"{'variant':<10} {'median s':>9} {'CPU-s':>7} {'size MB':>9}")
    for key, samples in results.items():
        size = samples.median("size")
        shown = f"{size / 1e6:9.1f}" if size else f"{'-':>9}"
        print(f"{key:<10} {samples.median('time'):9.2f} {samples.median('cpu'):7.1f} {shown}")
    for label, num, den, what, goal, moonshot in GOALS:
        ratio = results[num].median(what) / max(results[den].median(what), 1e-9)
        ok = "ok" if ratio <= goal else "MISSED"
        extra = f", moonshot <= {moonshot}" if moonshot else ""
        print(f"{label}: {ratio:.3f}  (goal <= {goal}{extra}: {ok})")
    if "before" in results:
        for what in ("time", "cpu", "size"):
            ratio = results["pgwarden"].median(what) / max(results["before"].median(what), 1e-9)
            print(f"pgwarden / before {what}: {ratio:.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--shape", choices=("vectors", "app", "one_table", "all"), default=None)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scale", type=int, default=None)
    parser.add_argument("--users", type=int, default=None)
    parser.add_argument("--documents", type=int, default=None)
    parser.add_argument("--compare-with", type=Path, default=None, metavar="DIR")
    args = parser.parse_args()
    shapes = {
        None: ("vectors", "app"),
        "all": ("vectors", "app", "one_table"),
    }.get(args.shape, (args.shape,))
    os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp())
    # pgwarden as installed from a wheel, whose modules come compiled: without this, a checkout
    # run with PYTHONDONTWRITEBYTECODE set compiles them at every CLI start (~0.2 s here)
    for checkout in (ROOT, args.compare_with):
        if checkout is not None:
            compileall.compile_dir(str(checkout / "daemon" / "pgwarden"), quiet=1)
    print("command: " + shlex.join([sys.executable, *sys.argv]))
    for shape in shapes:
        full = FULL[shape]
        sizes = Sizes(
            scale=args.scale if args.scale is not None else full.scale,
            users=args.users if args.users is not None else full.users,
            documents=args.documents if args.documents is not None else full.documents,
        )
        report(shape, run_shape(shape, sizes, args.runs, args.compare_with), args.runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
