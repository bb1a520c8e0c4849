"""Scale: 100 databases, ``/metrics`` under load, a 100,000-run catalog, idle cost, 10 GB.

Every measurement runs the real daemon (``pgwarden run``) or the real CLI, as operators do
(:mod:`benchmarks.scale_common`); each sub-command is short enough for one locked run:

* ``databases``: ``--count`` small databases on one embedded PostgreSQL 18, backed up (a) as
  that many targets and (b) as one whole-server target, with ``max_parallel_jobs`` 1, 2, 4
  (interleaved, ``--rounds`` times): total time until every backup is finished, the peak of
  connections the server held for pgwarden (``pg_stat_activity`` every 100 ms), the daemon's
  peak RSS and its children's (pg_dump and friends);
* ``metrics``: ``/metrics`` scraped ``--rate`` times a second with ``--count`` targets, idle
  and while they are all backed up; p50/p99/max against the 25 ms goal, beside the floor of
  the loaded machine (:mod:`benchmarks.scale_metrics`);
* ``catalog``: a catalog of ``--runs`` runs over ``--count`` targets (real schema, written
  through pgwarden's catalog): daemon start-up until ``READY=1``, ``pgwarden backups --json``
  wall time for all targets and for one (``--rounds`` times, interleaved);
* ``idle``: the daemon with ``--count`` targets and nothing due: RSS (VmRSS, VmHWM) and CPU
  over ``--seconds`` after ``--settle`` seconds, against 80 MB and 0.5 % of a core;
* ``big``: one backup of the cached 10 GB database (``one_table`` at ``--scale`` 680) by the
  daemon: wall time, MB/s of database size and of artifact bytes, pgwarden's peak RSS.

    flock /work/tmp/bench.lock .venv/bin/python benchmarks/scale.py databases [--count 100]
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.scale_catalog import fill_catalog  # noqa: E402
from benchmarks.scale_common import (  # noqa: E402
    PGWARDEN,
    Peaks,
    RunningDaemon,
    Sampler,
    backup_all,
    config_text,
    cpu_seconds,
    finished_backups,
    many_databases,
    proc_status,
    start_workdir,
)
from benchmarks.scale_metrics import cmd_metrics  # noqa: E402
from benchmarks.shapes import DB, Sizes, cached_server  # noqa: E402
from tests.pgservers import PgServer, start_pg18, temp_base  # noqa: E402

from pgwarden.control.client import ControlClient  # noqa: E402

MB = 1e6


def cmd_databases(args: argparse.Namespace) -> None:
    base = temp_base("pgwarden-scale-")
    server = start_pg18(base)
    try:
        t0 = time.monotonic()
        names = many_databases(server, args.count, args.rows)
        size = server.execute(f"SELECT pg_database_size('{names[0]}')")[0][0]
        print(
            f"built {args.count} databases of {int(size) / MB:.1f} MB in "  # type: ignore[call-overload]
            f"{time.monotonic() - t0:.0f} s"
        )
        modes = [m for m in ("targets", "server") if m in args.modes.split(",")]
        results: dict[tuple[str, int], list[tuple[float, int, Peaks, int]]] = {}
        for rnd in range(args.rounds):
            for jobs in (1, 2, 4):
                for mode in modes:
                    got = backup_all(server, names, jobs, mode == "server")
                    results.setdefault((mode, jobs), []).append(got)
                    print(
                        f"round {rnd + 1} {mode} jobs={jobs}: {got[0]:.1f} s, failed {got[1]}, "
                        f"conns {got[2].connections}, daemon HWM {got[3] / MB:.0f} MB",
                        flush=True,
                    )
        print(f"\n{args.count} databases; medians of {args.rounds} interleaved round(s)")
        print(
            f"{'mode':<8} {'jobs':>4} {'total s':>8} {'per db s':>8} {'failed':>6} "
            f"{'peak conns':>10} {'daemon MB':>9} {'children MB':>11}  peak conns by app"
        )
        for (mode, jobs), runs in results.items():
            secs = statistics.median(r[0] for r in runs)
            apps: dict[str, int] = {}
            for r in runs:
                for app, n in r[2].by_application.items():
                    apps[app] = max(apps.get(app, 0), n)
            print(
                f"{mode:<8} {jobs:>4} {secs:8.1f} {secs / args.count:8.2f} "
                f"{max(r[1] for r in runs):>6} {max(r[2].connections for r in runs):>10} "
                f"{max(r[3] for r in runs) / MB:9.0f} "
                f"{max(r[2].children_rss for r in runs) / MB:11.0f}  {apps}"
            )
        one = {m: statistics.median(r[0] for r in results[(m, 1)]) for m in modes}
        for mode in modes:
            for jobs in (2, 4):
                t = statistics.median(r[0] for r in results[(mode, jobs)])
                print(f"{mode}: jobs={jobs} speed-up over jobs=1: {one[mode] / t:.2f}x")
    finally:
        server.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)


def _timed(command: list[str]) -> float:
    start = time.monotonic()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - start


def cmd_catalog(args: argparse.Namespace) -> None:
    base = temp_base("pgwarden-scale-")
    server = start_pg18(base)
    workdir = start_workdir("catalog")
    try:
        names = [f"db{i:03d}" for i in range(args.count)]
        config = workdir / "pgwarden.toml"
        config.write_text(config_text(workdir, server, names))
        config.chmod(0o600)
        t0 = time.monotonic()
        fill_catalog(config, names, args.runs)
        print(
            f"catalog of {args.runs} runs over {args.count} targets written in "
            f"{time.monotonic() - t0:.0f} s",
            flush=True,
        )
        results: dict[str, list[float]] = {
            "start-up": [],
            "backups --json": [],
            "backups T --json": [],
        }
        for rnd in range(args.rounds):
            with RunningDaemon(workdir, config) as daemon:
                results["start-up"].append(daemon.ready_s)
            base_cmd = [str(PGWARDEN), "backups", "-c", str(config), "--json"]
            results["backups --json"].append(_timed(base_cmd))
            results["backups T --json"].append(_timed([*base_cmd[:4], names[0], "--json"]))
            print(
                f"round {rnd + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in results.items()),
                flush=True,
            )
        print(f"\ncatalog of {args.runs} runs, {args.count} targets; medians of {args.rounds}")
        for key, values in results.items():
            print(f"{key:<18} {statistics.median(values):7.2f} s   (min {min(values):.2f})")
    finally:
        server.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)


def _idle_once(workdir: Path, config: Path, args: argparse.Namespace) -> tuple[int, int, float]:
    with RunningDaemon(workdir, config) as daemon:
        time.sleep(args.settle)
        cpu0, t0 = cpu_seconds(daemon.pid), time.monotonic()
        time.sleep(args.seconds)
        cpu = (cpu_seconds(daemon.pid) - cpu0) / (time.monotonic() - t0)
        return proc_status(daemon.pid, "VmRSS"), proc_status(daemon.pid, "VmHWM"), cpu


def cmd_idle(args: argparse.Namespace) -> None:
    """First start (which creates the catalog: Alembic is loaded) and restarted (the catalog
    at head, as after any restart), interleaved."""
    base = temp_base("pgwarden-scale-")
    server = start_pg18(base)
    try:
        names = many_databases(server, args.count, 100)
        rows: dict[str, list[tuple[int, int, float]]] = {"first start": [], "restarted": []}
        for rnd in range(args.rounds):
            workdir = start_workdir("idle")
            config = workdir / "pgwarden.toml"
            config.write_text(config_text(workdir, server, names))
            config.chmod(0o600)
            for phase, got in rows.items():
                got.append(_idle_once(workdir, config, args))
                rss, hwm, cpu = got[-1]
                print(
                    f"round {rnd + 1} {phase}: RSS {rss / MB:.1f} MB, HWM {hwm / MB:.1f} MB, "
                    f"CPU {cpu * 100:.3f} % of a core",
                    flush=True,
                )
            shutil.rmtree(workdir, ignore_errors=True)
        print(
            f"\nidle daemon, {args.count} targets, {args.seconds:g} s after {args.settle:g} s; "
            f"medians of {args.rounds}"
        )
        print(
            f"{'phase':<12} {'RSS MB':>7} {'HWM MB':>7} {'/ 80 MB':>8} {'CPU %':>7} {'/ 0.5 %':>8}"
        )
        for phase, got in rows.items():
            rss = statistics.median(r[0] for r in got)
            hwm = statistics.median(r[1] for r in got)
            cpu = statistics.median(r[2] for r in got)
            print(
                f"{phase:<12} {rss / MB:7.1f} {hwm / MB:7.1f} {rss / 80e6:8.2f} "
                f"{cpu * 100:7.3f} {cpu * 100 / 0.5:8.2f}"
            )
    finally:
        server.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)


def cmd_big(args: argparse.Namespace) -> None:
    with cached_server("one_table", Sizes(scale=args.scale)) as server:
        size = int(server.execute(f"SELECT pg_database_size('{DB}')")[0][0])  # type: ignore[call-overload]
        print(f"database {DB}: {size / 1e9:.2f} GB", flush=True)
        workdir = start_workdir("big")
        try:
            secs, failed, peaks, hwm = backup_all_named(server, workdir)
            with sqlite3.connect(f"file:{workdir}/state/catalog.db?mode=ro", uri=True) as db:
                artifact = int(db.execute("SELECT sum(size_bytes) FROM backups").fetchone()[0] or 0)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        print(f"\none backup of a {size / 1e9:.2f} GB database (failed: {failed})")
        print(f"wall time           {secs:8.1f} s")
        print(f"database MB/s       {size / MB / secs:8.1f}")
        print(f"artifact MB/s       {artifact / MB / secs:8.1f}  ({artifact / MB:.1f} MB written)")
        print(f"pgwarden peak RSS   {hwm / MB:8.1f} MB (VmHWM of the daemon)")
        print(f"children peak RSS   {peaks.children_rss / MB:8.1f} MB  {peaks.child_rss}")


def backup_all_named(server: PgServer, workdir: Path) -> tuple[float, int, Peaks, int]:
    config = workdir / "pgwarden.toml"
    config.write_text(config_text(workdir, server, [DB], jobs=1))
    config.chmod(0o600)
    with RunningDaemon(workdir, config) as daemon:
        with Sampler(daemon.pid, None, period=0.5) as sampler:
            started = time.monotonic()
            ControlClient(workdir / "ctl.sock").call("backup", {"target": DB})
            while (done := finished_backups(workdir))[0] < 1:
                time.sleep(0.5)
            secs = time.monotonic() - started
        return secs, done[1], sampler.peaks, proc_status(daemon.pid, "VmHWM")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("databases")
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--rows", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--modes", default="targets,server")
    p = sub.add_parser("metrics")
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--rows", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--rate", type=float, default=20)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument(
        "--priority",
        choices=("auto", "low", "normal"),
        default="auto",
        help="[targets.backup] priority; auto = normal here (the backups are started by ctl)",
    )
    p.add_argument(
        "--gzip",
        action="store_true",
        help="scrape with Accept-Encoding: gzip, as Prometheus does (the floor serves it plain)",
    )
    p = sub.add_parser("catalog")
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--runs", type=int, default=100_000)
    p.add_argument("--rounds", type=int, default=3)
    p = sub.add_parser("idle")
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--settle", type=float, default=20)
    p.add_argument("--seconds", type=float, default=60)
    p = sub.add_parser("big")
    p.add_argument("--scale", type=int, default=680)
    args = parser.parse_args()
    os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp())
    compileall.compile_dir(str(ROOT / "daemon" / "pgwarden"), quiet=1)
    print(
        "command: "
        + " ".join(
            [
                Path(sys.executable).relative_to(ROOT).as_posix()
                if sys.executable.startswith(str(ROOT))
                else sys.executable,
                *sys.argv,
            ]
        ),
        flush=True,
    )
    {
        "databases": cmd_databases,
        "metrics": cmd_metrics,
        "catalog": cmd_catalog,
        "idle": cmd_idle,
        "big": cmd_big,
    }[args.cmd](args)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"machine: {os.cpu_count()} cores, load average at the end {load} (shared machine)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
