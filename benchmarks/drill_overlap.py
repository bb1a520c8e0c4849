"""Would a drill gain by counting rows while the indexes build?  Measured with stock tools.

A drill's exact counts need the data only, so they could run while ``pg_restore`` builds the
indexes and checks the constraints (the post-data section).  Per shape, the cached database is
dumped once (``pg_dump -Fc -Z0``) and restored, round after round, into a scratch database
the way a drill restores (pre-data, tables made unlogged, data with ``--jobs=2``), then:

* ``serial``: post-data with ``--jobs=2``, then an exact ``count(*)`` of every table;
* ``overlap``: the same counts on one more connection, started with the post-data run.

It prints the median time of "post-data and counts" per variant, and their ratio.

    flock /work/tmp/bench.lock .venv/bin/python benchmarks/drill_overlap.py --shape app
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.shapes import DB, Sizes, cached_server  # noqa: E402
from tests.pgservers import PgServer  # noqa: E402

VARIANTS = ("serial", "overlap")


def _counts(dsn: str, tables: list[str]) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for table in tables:
            conn.execute(f"SELECT count(*) FROM {table}").fetchone()


def _once(server: PgServer, dump: Path, tables: list[str], variant: str) -> float:
    """Restore ``dump`` into a fresh scratch database; seconds of post-data and counts."""
    tool = str(server.bin_dir / "pg_restore")
    with psycopg.connect(server.dsn("postgres"), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS overlap_scratch")
        conn.execute("CREATE DATABASE overlap_scratch")
    dsn = server.dsn("overlap_scratch")
    try:
        subprocess.run([tool, "--section=pre-data", "-d", dsn, str(dump)], check=True)
        with psycopg.connect(dsn, autocommit=True) as conn:
            for table in tables:
                conn.execute(f"ALTER TABLE {table} SET UNLOGGED")
        subprocess.run([tool, "--section=data", "--jobs=2", "-d", dsn, str(dump)], check=True)
        started = time.monotonic()
        post_data = [tool, "--section=post-data", "--jobs=2", "-d", dsn, str(dump)]
        if variant == "overlap":
            counting = threading.Thread(target=_counts, args=(dsn, tables))
            counting.start()
            subprocess.run(post_data, check=True)
            counting.join()
        else:
            subprocess.run(post_data, check=True)
            _counts(dsn, tables)
        return time.monotonic() - started
    finally:
        with psycopg.connect(server.dsn("postgres"), autocommit=True) as conn:
            conn.execute("DROP DATABASE overlap_scratch")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=("app", "one_table", "vectors"), default="app")
    parser.add_argument("--scale", type=int, default=None)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    sizes = Sizes(scale=args.scale) if args.scale else Sizes()
    print(f"command: {' '.join(sys.argv)}", flush=True)
    took: dict[str, list[float]] = {v: [] for v in VARIANTS}
    with cached_server(args.shape, sizes) as server, tempfile.TemporaryDirectory() as tmp:
        dump = Path(tmp) / "bench.dump"
        subprocess.run(
            [str(server.bin_dir / "pg_dump"), "-Fc", "-Z0", "-f", str(dump), server.dsn(DB)],
            check=True,
        )
        with psycopg.connect(server.dsn(DB)) as conn:
            tables = [
                str(row[0])
                for row in conn.execute(
                    "SELECT format('%I.%I', schemaname, relname) FROM pg_stat_user_tables"
                )
            ]
        for run in range(args.runs):
            for variant in VARIANTS:
                took[variant].append(_once(server, dump, tables, variant))
            print(
                f"run {run + 1}: " + ", ".join(f"{v} {took[v][-1]:.2f} s" for v in VARIANTS),
                flush=True,
            )
    medians = {v: statistics.median(took[v]) for v in VARIANTS}
    print(f"\n{args.shape}: post-data and counts, median of {args.runs} interleaved runs")
    for variant in VARIANTS:
        print(f"{variant:<8} {medians[variant]:6.2f} s")
    print(f"overlap / serial: {medians['overlap'] / medians['serial']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
