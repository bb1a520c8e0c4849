"""``/metrics`` p99 with 100 targets, idle and during backups, beside the loaded machine's floor.

What a scrape waits for is measured the way Prometheus sees it: by a scraper in a process of
its own (``python benchmarks/scale_metrics.py scrape URL RATE``; a thread of the benchmark
would share its interpreter with the benchmark's own polling), ``--rate`` GETs a second, each
timed from connect to the last byte.  Beside the daemon, a second scraper process times a
static HTTP server (``python -m http.server``, a process of its own, thread per connection
like the daemon's listener) serving a file of the daemon's exposition size: its p99 is the
floor this machine gives any process under the same load, which no change in pgwarden can go
below.  No sampler runs during the backups here (its polling would load what is measured).

    flock /work/tmp/bench.lock .venv/bin/python benchmarks/scale.py metrics
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.scale_common import (  # noqa: E402
    RunningDaemon,
    backup_all,
    config_text,
    many_databases,
    start_workdir,
    stats,
)
from tests.pgservers import free_port, start_pg18, temp_base  # noqa: E402

GOAL_MS = 25.0
PHASES = ("idle", "backups")


@contextmanager
def scraping(url: str, rate: float, out: list[float], gzipped: bool = False) -> Iterator[None]:
    """A scraper process getting ``url`` ``rate`` times a second; its latencies are appended
    to ``out`` when the block ends."""
    proc = subprocess.Popen(
        [sys.executable, __file__, "scrape", url, str(rate), *(["gzip"] if gzipped else [])],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        answer, _ = proc.communicate(timeout=60)
    out.extend(json.loads(answer))


@contextmanager
def both(
    port: int, floor_port: int, rate: float, got: dict[str, list[float]], gzipped: bool = False
) -> Iterator[None]:
    """The daemon's ``/metrics`` and the static floor, scraped at the same time."""
    with (
        scraping(f"http://127.0.0.1:{port}/metrics", rate, got["pgwarden"], gzipped),
        scraping(f"http://127.0.0.1:{floor_port}/metrics.txt", rate, got["floor"], gzipped),
    ):
        yield


@contextmanager
def static_server(directory: Path) -> Iterator[int]:
    """``python -m http.server`` on loopback serving ``directory``: its port."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", "-b", "127.0.0.1", "-d", str(directory), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def cmd_metrics(args: argparse.Namespace) -> None:
    base = temp_base("pgwarden-scale-")
    server = start_pg18(base)
    results = {(phase, who): [] for phase in PHASES for who in ("pgwarden", "floor")}
    try:
        names = many_databases(server, args.count, args.rows)
        for rnd in range(args.rounds):
            port = free_port()
            workdir = start_workdir("metrics")
            config = workdir / "pgwarden.toml"
            config.write_text(config_text(workdir, server, names, metrics_port=port))
            config.chmod(0o600)
            with static_server(base) as floor_port:
                idle = {
                    "pgwarden": results[("idle", "pgwarden")],
                    "floor": results[("idle", "floor")],
                }
                with RunningDaemon(workdir, config):
                    time.sleep(2)  # the first monitor sample
                    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read()
                    (base / "metrics.txt").write_bytes(body)  # what the floor serves
                    with both(port, floor_port, args.rate, idle, args.gzip):
                        time.sleep(args.seconds)
                shutil.rmtree(workdir, ignore_errors=True)
                port = free_port()
                busy = {
                    "pgwarden": results[("backups", "pgwarden")],
                    "floor": results[("backups", "floor")],
                }
                backup_all(
                    server,
                    names,
                    args.jobs,
                    False,
                    port,
                    lambda p=port, f=floor_port, b=busy: both(p, f, args.rate, b, args.gzip),  # type: ignore[misc]
                    sample=False,
                    priority=args.priority,
                )
            print(f"round {rnd + 1}: exposition {len(body)} bytes, " + _p99s(results), flush=True)
        _table(args, results)
    finally:
        server.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)


def _p99s(results: dict[tuple[str, str], list[float]]) -> str:
    return ", ".join(
        f"{phase} {who} p99 {stats(v)[1] * 1e3:.1f} ms ({len(v)})"
        for (phase, who), v in results.items()
    )


def _table(args: argparse.Namespace, results: dict[tuple[str, str], list[float]]) -> None:
    print(
        f"\n/metrics with {args.count} targets, {args.rate:g} scrapes/s from a process of its "
        f"own, idle {args.seconds:g} s and while all are backed up (max_parallel_jobs "
        f"{args.jobs}), {args.rounds} rounds; floor: a static server of the same size"
        + ("; Accept-Encoding: gzip (the floor answers plain)" if args.gzip else "")
    )
    print(f"{'phase':<8} {'server':<9} {'scrapes':>7} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}")
    for (phase, who), lat in results.items():
        p50, p99, worst = stats(lat)
        print(
            f"{phase:<8} {who:<9} {len(lat):>7} {p50 * 1e3:7.1f} {p99 * 1e3:7.1f} {worst * 1e3:7.1f}"
        )
    for phase in PHASES:
        p99 = stats(results[(phase, "pgwarden")])[1] * 1e3
        floor = stats(results[(phase, "floor")])[1] * 1e3
        verdict = "met" if p99 <= GOAL_MS else "NOT met"
        print(
            f"goal p99 <= {GOAL_MS:g} ms {phase}: {p99:.1f} ms ({p99 / GOAL_MS:.2f}x the goal, "
            f"{p99 / floor:.2f}x the floor's {floor:.1f} ms): {verdict}"
        )


def scrape(url: str, rate: float, gzipped: bool = False) -> None:
    """The scraper process: GET ``url`` ``rate`` times a second until SIGTERM (asking for gzip
    like Prometheus when ``gzipped``), then print the latencies (seconds) as a JSON list."""
    headers = {"Accept-Encoding": "gzip"} if gzipped else {}
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    latencies: list[float] = []
    while not stopping:
        started = time.monotonic()
        try:
            request = urllib.request.Request(url, headers=headers)
            with urllib.request.urlopen(request, timeout=10) as response:
                response.read()
        except InterruptedError:
            break
        latencies.append(time.monotonic() - started)
        time.sleep(max(0.0, 1.0 / rate - (time.monotonic() - started)))
    print(json.dumps(latencies))


if __name__ == "__main__":
    if len(sys.argv) in (4, 5) and sys.argv[1] == "scrape":
        scrape(sys.argv[2], float(sys.argv[3]), sys.argv[4:] == ["gzip"])
    else:
        raise SystemExit(
            "usage: scale_metrics.py scrape URL RATE [gzip] (or run: scale.py metrics)"
        )
