"""Does a backup starve production?  A pgbench workload alone, and during a pgwarden backup at
normal and at low priority, and with its read rate capped (issue 19, item 2).

On the ``app`` shape of :mod:`benchmarks.shapes` (database ``bench``: pgbench tables at scale
30 -- the workload's -- plus ``users`` with jsonb and ``documents`` with text, jsonb,
``vector(384)`` and ivfflat; ~1.2 GB), ``--runs`` rounds, the three variants interleaved (the
order rotates each round):

* ``alone``: the workload for ``--alone-s`` seconds, nothing else;
* ``normal``: the workload while ``pgwarden backup --priority normal`` runs;
* ``low``: the workload while ``pgwarden backup --priority low`` runs (pg_dump and pgwarden's
  stages at nice 10, I/O best-effort 7; the server backend serving pg_dump keeps nice 0);
* ``low+server``: the same, and the benchmark (as root, or as the server's OS user) also lowers
  the server backends serving the backup (``application_name`` ``pgwarden-dump-*`` and the
  snapshot session) as soon as they appear: what pgwarden *cannot* do as its own user, measured
  to show how much of the remaining cost is the server's side of the dump;
* ``capped``: ``pgwarden backup --priority normal --max-rate CAP`` (``--cap``): pgwarden reads
  pg_dump's output at most CAP per second, so pg_dump and the server backend wait on their
  pipe and socket and the dump's whole CPU and I/O are spread out;
* ``low+capped``: the same at low priority.

The workload is ``pgbench -c 4 -j 2 -M prepared -n`` with the built-in tpcb-like script and
per-transaction logs (``-l``); ``--rate N`` throttles it to N transactions/s (``-R``: latency
then counts from each transaction's scheduled start, so queueing shows), otherwise it runs flat
out.  pgbench and pgwarden each run in a session of their own, as an application server and
the daemon do under systemd: with ``kernel.sched_autogroup_enabled`` the CPU is shared between
sessions first, and nice ranks tasks only within one.  It starts ``--warmup`` seconds before the measured window and runs until ``--margin``
seconds after it; TPS and latency come from the transactions that *completed inside the
window* (the backup's start to its end).  Prints the median TPS, p50/p99 latency and backup
duration per variant, the CPU-seconds of the backup's own processes (pgwarden, pg_dump,
pg_restore: ``RUSAGE_CHILDREN``) and of the server backends serving it (sampled every 0.25 s),
and the ratios against the workload alone and between the priorities: of the medians, and
the median of each round's own ratio (paired within a round, where the machine's other load
drifts least; on a shared machine that is the figure to trust).

    .venv/bin/python benchmarks/priority.py [--runs 3] [--rate N] [--alone-s 30]
        [--variants alone normal low low+server capped low+capped] [--cap 20MB]
        [--scale N --users N --documents N]
        # sizes: default the app shape's full size; low+server needs root (or the server's user)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
import psycopg  # noqa: E402
from benchmarks.shapes import DB, Sizes, cached_server  # noqa: E402
from tests.pgservers import PgServer  # noqa: E402

from pgwarden.config.rates import parse_rate  # noqa: E402
from pgwarden.pg.priority import (  # noqa: E402
    IOPRIO_CLASS_BE,
    LOW_IO_LEVEL,
    LOW_NICE,
    set_io_priority,
)

VARIANTS = ("alone", "normal", "low", "low+server", "capped", "low+capped")
#: the backup's server sessions: pg_dump's (tagged) and the snapshot session (facts)
BACKENDS_SQL = (
    "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'pgwarden-dump-%' "
    "OR application_name = 'pgwarden-backup'"
)
CLIENTS, THREADS = 4, 2


@dataclass
class Samples:
    """One variant's measurements, one entry per round."""

    tps: list[float] = field(default_factory=list)
    p50_ms: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)
    backup_s: list[float] = field(default_factory=list)
    own_cpu_s: list[float] = field(default_factory=list)  # pgwarden + pg_dump + pg_restore
    server_cpu_s: list[float] = field(default_factory=list)  # the backends serving the backup

    @staticmethod
    def median(values: list[float]) -> float:
        return float(statistics.median(values)) if values else float("nan")


def write_config(work: Path, server: PgServer) -> Path:
    config = work / "pgwarden.toml"
    config.write_text(
        f'[daemon]\nstate_dir = "{work}/state"\nlog_level = "warning"\n'
        f'[storage]\npath = "{work}/backups"\n'
        f'[[targets]]\nname = "bench"\ndsn = "{server.uri(DB)}"\n'
        f'bin_dir = "{server.bin_dir}"\n'
        "  [targets.backup]\n  retries = 0\n"
    )
    return config


class Workload:
    """pgbench running flat out (or at ``rate``) with per-transaction logs, until stopped."""

    def __init__(self, server: PgServer, logs: Path, rate: int | None) -> None:
        self.logs = logs
        logs.mkdir()
        argv = [str(server.bin_dir / "pgbench"), "-n", "-M", "prepared"]
        argv += ["-c", str(CLIENTS), "-j", str(THREADS), "-T", "3600", "-l"]
        argv += [f"--log-prefix={logs}/tx", "-d", server.dsn(DB)]
        if rate is not None:
            argv += ["-R", str(rate)]
        # a session (an autogroup) of its own, as an application server has
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=logs,
            start_new_session=True,
        )

    def stop(self) -> None:
        """SIGINT: pgbench ends; what its log buffers still held (the last fraction of a second,
        after the window) is lost, nothing inside the window."""
        if self.proc.poll() is not None:
            err = self.proc.stderr.read().decode() if self.proc.stderr else ""
            raise RuntimeError(f"pgbench ended early ({self.proc.returncode}): {err}")
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(60)

    def window(self, start: float, end: float) -> tuple[float, float, float]:
        """TPS, p50 and p99 latency (ms) of the transactions completed in [start, end]."""
        latencies: list[int] = []
        for log in self.logs.glob("tx.*"):
            for line in log.read_text(errors="replace").splitlines():
                fields = line.split()
                if len(fields) < 6 or not fields[2].isdigit():
                    continue  # a torn last line, or a skipped transaction
                done = int(fields[4]) + int(fields[5]) / 1e6
                if start <= done <= end:
                    latencies.append(int(fields[2]))
        if len(latencies) < 2:
            raise RuntimeError(f"only {len(latencies)} transactions in the window")
        cuts = statistics.quantiles(latencies, n=100)
        return len(latencies) / (end - start), cuts[49] / 1000, cuts[98] / 1000


class BackendWatch:
    """Samples the CPU time of the backup's server backends (and lowers them, ``lower``)."""

    def __init__(self, server: PgServer, lower: bool) -> None:
        self.dsn, self.lower = server.dsn(DB), lower
        self.cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="backend-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self._stop.wait(0.25):
                for (pid,) in conn.execute(BACKENDS_SQL).fetchall():
                    if pid not in self.cpu and self.lower:
                        os.setpriority(os.PRIO_PROCESS, pid, LOW_NICE)
                        set_io_priority(IOPRIO_CLASS_BE, LOW_IO_LEVEL, pid)
                    with contextlib.suppress(psutil.NoSuchProcess):
                        times = psutil.Process(pid).cpu_times()
                        self.cpu[pid] = times.user + times.system

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return sum(self.cpu.values())


def backup(server: PgServer, config: Path, variant: str, cap: str) -> tuple[float, float, float]:
    """One ``pgwarden backup`` through the real CLI: its own duration (s), the CPU-seconds of
    pgwarden and its tools, and of the server backends serving it."""
    priority = "normal" if variant in ("normal", "capped") else "low"
    pgwarden = Path(sys.executable).parent / "pgwarden"
    argv = [str(pgwarden), "backup", "-c", str(config), "bench", "--priority", priority, "--json"]
    capped = variant.endswith("capped")
    if capped:
        argv += ["--max-rate", cap]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    watch = BackendWatch(server, lower=variant == "low+server")
    try:
        # its own session (autogroup), as the daemon under systemd has
        done = subprocess.run(
            argv, check=True, capture_output=True, text=True, start_new_session=True
        )
    finally:
        server_cpu = watch.stop()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    outcome = json.loads(done.stdout)
    assert outcome["priority"] == priority, outcome
    assert outcome["max_rate"] == (parse_rate(cap) if capped else 0), outcome
    return float(outcome["duration_s"]), own, server_cpu


def one_run(
    server: PgServer, config: Path, work: Path, variant: str, args: argparse.Namespace
) -> tuple[float, float, float, tuple[float, float, float] | None]:
    logs = work / f"logs-{variant.replace('+', '-')}-{time.monotonic_ns()}"
    workload = Workload(server, logs, args.rate)
    try:
        time.sleep(args.warmup)
        start = time.time()
        measured = None
        if variant == "alone":
            time.sleep(args.alone_s)
        else:
            measured = backup(server, config, variant, args.cap)
        end = time.time()
        time.sleep(args.margin)
    finally:
        workload.stop()
    tps, p50, p99 = workload.window(start, end)
    for made in (work / "backups" / "bench").glob("*"):
        made.unlink()
    return tps, p50, p99, measured


def run(sizes: Sizes, args: argparse.Namespace) -> dict[str, Samples]:
    results = {key: Samples() for key in VARIANTS}
    with (
        cached_server("app", sizes) as server,
        tempfile.TemporaryDirectory(prefix="pgwarden-bench-prio-", dir="/tmp") as tmp,
    ):
        work = Path(tmp)
        size = server.execute(f"SELECT pg_database_size('{DB}')")[0][0]
        print(f"app {sizes}: {int(size) / 1e9:.2f} GB database", flush=True)  # type: ignore[call-overload]
        config = write_config(work, server)
        variants = [v for v in VARIANTS if v in args.variants]
        for round_no in range(args.runs):
            shift = round_no % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                tps, p50, p99, measured = one_run(server, config, work, variant, args)
                samples = results[variant]
                samples.tps.append(tps)
                samples.p50_ms.append(p50)
                samples.p99_ms.append(p99)
                extra = ""
                if measured is not None:
                    samples.backup_s.append(measured[0])
                    samples.own_cpu_s.append(measured[1])
                    samples.server_cpu_s.append(measured[2])
                    extra = (
                        f", backup {measured[0]:.1f} s (CPU-s: pgwarden+tools "
                        f"{measured[1]:.1f}, server backends {measured[2]:.1f})"
                    )
                print(
                    f"run {round_no + 1} {variant:<10}: {tps:6.0f} TPS, p50 {p50:6.2f} ms, "
                    f"p99 {p99:7.2f} ms{extra}",
                    flush=True,
                )
    return results


def ratio(mine: list[float], theirs: list[float]) -> str:
    """The ratio of the medians, and the median of the rounds' own ratios (paired: the two
    variants ran minutes apart, so a round's load drift cancels out)."""
    paired = statistics.median(a / b for a, b in zip(mine, theirs, strict=False))
    return f"{Samples.median(mine) / Samples.median(theirs):.2f}x [{paired:.2f}x]"


def report(results: dict[str, Samples], args: argparse.Namespace, command: str) -> None:
    m = Samples.median
    workload = f"rate {args.rate}/s" if args.rate else "flat out"
    print(
        f"\nmedian of {args.runs} interleaved runs, pgbench -c {CLIENTS} -j {THREADS} "
        f"-M prepared tpcb-like ({workload}), 2-core machine; capped: --max-rate {args.cap}"
    )
    header = ("variant", "TPS", "p50 ms", "p99 ms", "backup s", "own CPU-s", "server CPU-s")
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for key, s in results.items():
        if not s.tps:
            continue
        cells = [key, f"{m(s.tps):.0f}", f"{m(s.p50_ms):.2f}", f"{m(s.p99_ms):.2f}"]
        if s.backup_s:
            cells += [f"{m(s.backup_s):.1f}", f"{m(s.own_cpu_s):.1f}", f"{m(s.server_cpu_s):.1f}"]
        else:
            cells += ["-", "-", "-"]
        print("| " + " | ".join(cells) + " |")
    print("\nratios: of the medians, and [the median of each round's own ratio]")
    pairs = [(v, "alone") for v in VARIANTS[1:]] + [(v, "normal") for v in VARIANTS[2:]]
    for key, base in pairs:
        s, b = results[key], results[base]
        if not s.tps or not b.tps:
            continue
        parts = [("TPS", s.tps, b.tps), ("p99", s.p99_ms, b.p99_ms)]
        if base != "alone":
            parts.append(("backup time", s.backup_s, b.backup_s))
        text = ", ".join(f"{name} {ratio(mine, theirs)}" for name, mine, theirs in parts)
        print(f"  {key + ' / ' + base:<21} {text}")
    print(f"\nreproduce: {command}")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=int, default=None, help="pgbench -R (default: flat out)")
    parser.add_argument("--alone-s", type=float, default=30.0, help="the alone window (s)")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--margin", type=float, default=2.0)
    parser.add_argument(
        "--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS), help="default: all"
    )
    parser.add_argument(
        "--cap", default="20MB", help="--max-rate of the capped variants (default: 20MB)"
    )
    parser.add_argument("--scale", type=int, default=None)
    parser.add_argument("--users", type=int, default=None)
    parser.add_argument("--documents", type=int, default=None)
    args = parser.parse_args()
    full = Sizes()
    sizes = Sizes(
        scale=args.scale or full.scale,
        users=args.users or full.users,
        documents=args.documents or full.documents,
    )
    results = run(sizes, args)
    report(results, args, " ".join([".venv/bin/python", "benchmarks/priority.py", *sys.argv[1:]]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
