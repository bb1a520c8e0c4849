"""Does a backup starve production?  A pgbench workload alone, and during a pgwarden backup at
normal and at low priority (issue 19, item 2).

On the ``app`` shape of :mod:`benchmarks.shapes` (database ``bench``: pgbench tables at scale
30 -- the workload's -- plus ``users`` with jsonb and ``documents`` with text, jsonb,
``vector(384)`` and ivfflat; ~1.2 GB), ``--runs`` rounds, the three variants interleaved (the
order rotates each round):

* ``alone``: the workload for ``--alone-s`` seconds, nothing else;
* ``normal``: the workload while ``pgwarden backup --priority normal`` runs;
* ``low``: the workload while ``pgwarden backup --priority low`` runs (pg_dump and pgwarden's
  stages at nice 10, I/O best-effort 7; the server backend serving pg_dump keeps nice 0).

The workload is ``pgbench -c 4 -j 2 -M prepared -n`` with the built-in tpcb-like script and
per-transaction logs (``-l``); ``--rate N`` throttles it to N transactions/s (``-R``: latency
then counts from each transaction's scheduled start, so queueing shows), otherwise it runs flat
out.  It starts ``--warmup`` seconds before the measured window and runs until ``--margin``
seconds after it; TPS and latency come from the transactions that *completed inside the
window* (the backup's start to its end).  Prints the median TPS, p50/p99 latency and backup
duration per variant, and the ratios against the workload alone and between the priorities.

    .venv/bin/python benchmarks/priority.py [--runs 3] [--rate N] [--alone-s 30]
        [--scale N --users N --documents N]   # sizes; default: the app shape's full size
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.shapes import DB, Sizes, cached_server  # noqa: E402
from tests.pgservers import PgServer  # noqa: E402

VARIANTS = ("alone", "normal", "low")
CLIENTS, THREADS = 4, 2


@dataclass
class Samples:
    """One variant's measurements, one entry per round."""

    tps: list[float] = field(default_factory=list)
    p50_ms: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)
    backup_s: list[float] = field(default_factory=list)

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
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=logs
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


def backup(config: Path, priority: str) -> float:
    """One ``pgwarden backup`` through the real CLI; its own duration (s)."""
    pgwarden = Path(sys.executable).parent / "pgwarden"
    argv = [str(pgwarden), "backup", "-c", str(config), "bench", "--priority", priority, "--json"]
    done = subprocess.run(argv, check=True, capture_output=True, text=True)
    outcome = json.loads(done.stdout)
    assert outcome["priority"] == priority, outcome
    return float(outcome["duration_s"])


def one_run(
    server: PgServer, config: Path, work: Path, variant: str, args: argparse.Namespace
) -> tuple[float, float, float, float | None]:
    logs = work / f"logs-{variant}-{time.monotonic_ns()}"
    workload = Workload(server, logs, args.rate)
    try:
        time.sleep(args.warmup)
        start = time.time()
        took = None
        if variant == "alone":
            time.sleep(args.alone_s)
        else:
            took = backup(config, variant)
        end = time.time()
        time.sleep(args.margin)
    finally:
        workload.stop()
    tps, p50, p99 = workload.window(start, end)
    for made in (work / "backups" / "bench").glob("*"):
        made.unlink()
    return tps, p50, p99, took


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
        for round_no in range(args.runs):
            order = VARIANTS[round_no % 3 :] + VARIANTS[: round_no % 3]
            for variant in order:
                tps, p50, p99, took = one_run(server, config, work, variant, args)
                samples = results[variant]
                samples.tps.append(tps)
                samples.p50_ms.append(p50)
                samples.p99_ms.append(p99)
                if took is not None:
                    samples.backup_s.append(took)
                backup_text = "" if took is None else f", backup {took:.1f} s"
                print(
                    f"run {round_no + 1} {variant:<6}: {tps:8.0f} TPS, p50 {p50:6.2f} ms, "
                    f"p99 {p99:7.2f} ms{backup_text}",
                    flush=True,
                )
    return results


def report(results: dict[str, Samples], args: argparse.Namespace, command: str) -> None:
    m = Samples.median
    workload = f"rate {args.rate}/s" if args.rate else "flat out"
    print(
        f"\nmedian of {args.runs} interleaved runs, pgbench -c {CLIENTS} -j {THREADS} "
        f"-M prepared tpcb-like ({workload}), 2-core machine"
    )
    print(f"{'variant':<8} {'TPS':>8} {'p50 ms':>8} {'p99 ms':>8} {'backup s':>9}")
    for key, s in results.items():
        took = f"{m(s.backup_s):9.1f}" if s.backup_s else f"{'-':>9}"
        print(f"{key:<8} {m(s.tps):8.0f} {m(s.p50_ms):8.2f} {m(s.p99_ms):8.2f} {took}")
    alone, normal, low = (results[k] for k in VARIANTS)
    print("\nratios")
    for key, s in (("normal", normal), ("low", low)):
        print(f"  TPS during a {key:<6} backup / alone: {m(s.tps) / m(alone.tps):.2f}x")
        print(f"  p99 during a {key:<6} backup / alone: {m(s.p99_ms) / m(alone.p99_ms):.2f}x")
    print(f"  TPS during low / during normal:      {m(low.tps) / m(normal.tps):.2f}x")
    print(f"  p99 during low / during normal:      {m(low.p99_ms) / m(normal.p99_ms):.2f}x")
    print(f"  backup time low / normal:            {m(low.backup_s) / m(normal.backup_s):.2f}x")
    print(f"\nreproduce: {command}")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=int, default=None, help="pgbench -R (default: flat out)")
    parser.add_argument("--alone-s", type=float, default=30.0, help="the alone window (s)")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--margin", type=float, default=2.0)
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
