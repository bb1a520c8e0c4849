"""Backup speed and size: pgwarden against the strategy's ``pg_dump | gzip`` and the raw dump.

Builds a database of about 1 GB (pgbench data at ``--scale`` plus a pgvector ``documents``
table with an ivfflat index) on its own embedded PostgreSQL 18, then runs, interleaved,
``--runs`` times each:

* ``strategy``: ``pg_dump DB | gzip > x.sql.gz`` (the seed's cron job);
* ``raw``: ``pg_dump -Fc -Z0 > /dev/null`` (the dump's own speed limit);
* ``pgwarden``: ``pgwarden backup`` (custom format, zstd stage, sha256, exact row counts,
  vector probes, whole readback) through the real CLI.

Prints the median wall time and output size of each, and the ratios the issue sets as goals:
pgwarden <= 0.2x the strategy's time with output no larger, and <= 1.5x the raw dump.

    .venv/bin/python benchmarks/backup.py [--scale 60] [--runs 3] [--vectors 100000]
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.pgservers import PgServer, start_pg18, temp_base  # noqa: E402

DB = "bench"


def build(server: PgServer, scale: int, vectors: int) -> None:
    server.create_database(DB)
    subprocess.run(
        [str(server.bin_dir / "pgbench"), "-i", "-q", "-s", str(scale), "-d", server.dsn(DB)],
        check=True,
        capture_output=True,
    )
    server.execute("CREATE EXTENSION vector", DB)
    server.execute(
        "CREATE TABLE documents (id serial PRIMARY KEY, content text, embedding vector(384))", DB
    )
    server.execute(
        "INSERT INTO documents (content, embedding) SELECT 'doc ' || g, "
        "(SELECT array_agg(random()::real) FROM generate_series(1, 384) WHERE g > 0)::vector "
        f"FROM generate_series(1, {vectors}) g",
        DB,
    )
    lists = max(10, min(1000, vectors // 1000))
    server.execute(
        "CREATE INDEX ON documents USING ivfflat (embedding vector_cosine_ops) "
        f"WITH (lists = {lists})",
        DB,
    )
    server.execute("VACUUM ANALYZE", DB)


def timed(command: str | list[str], **kwargs: object) -> float:
    start = time.monotonic()
    subprocess.run(command, check=True, **kwargs)  # type: ignore[call-overload]
    return time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=60)
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp())
    # pgwarden as installed from a wheel, whose modules come compiled: without this, a checkout
    # run with PYTHONDONTWRITEBYTECODE set compiles them at every CLI start (~0.2 s here)
    compileall.compile_dir(str(ROOT / "daemon" / "pgwarden"), quiet=1)
    base = temp_base("pgwarden-bench-")
    server = start_pg18(base)
    work = Path(tempfile.mkdtemp(prefix="pgwarden-bench-work-", dir="/tmp"))
    try:
        t0 = time.monotonic()
        build(server, args.scale, args.vectors)
        size = server.execute(f"SELECT pg_database_size('{DB}')")[0][0]
        print(f"built {DB}: {int(size) / 1e9:.2f} GB in {time.monotonic() - t0:.0f} s")  # type: ignore[call-overload]
        config = work / "pgwarden.toml"
        config.write_text(
            f'[daemon]\nstate_dir = "{work}/state"\nlog_level = "warning"\n'
            f'[storage]\npath = "{work}/backups"\n'
            f'[[targets]]\nname = "bench"\ndsn = "{server.uri(DB)}"\n'
            f'bin_dir = "{server.bin_dir}"\n'
        )
        pg_dump = server.bin_dir / "pg_dump"
        pgwarden = Path(sys.executable).parent / "pgwarden"
        results: dict[str, list[tuple[float, int]]] = {"strategy": [], "raw": [], "pgwarden": []}
        for run in range(args.runs):
            out = work / f"strategy-{run}.sql.gz"
            secs = timed(f"{pg_dump} '{server.dsn(DB)}' | gzip > {out}", shell=True)
            results["strategy"].append((secs, out.stat().st_size))
            out.unlink()
            secs = timed(f"{pg_dump} -Fc -Z0 '{server.dsn(DB)}' > /dev/null", shell=True)
            results["raw"].append((secs, 0))
            secs = timed(
                [str(pgwarden), "backup", "-c", str(config), "bench"], stdout=subprocess.DEVNULL
            )
            made = sorted((work / "backups" / "bench").glob("*.zst"))[-1]
            results["pgwarden"].append((secs, made.stat().st_size))
            for leftover in (work / "backups" / "bench").iterdir():
                leftover.unlink()
            print(
                f"run {run + 1}: " + ", ".join(f"{k} {v[-1][0]:.1f} s" for k, v in results.items())
            )
        med = {k: statistics.median(s for s, _ in v) for k, v in results.items()}
        sizes = {k: statistics.median(b for _, b in v) for k, v in results.items()}
        print()
        print(f"{'variant':<10} {'median s':>9} {'size MB':>9}")
        for key in results:
            shown = f"{sizes[key] / 1e6:9.1f}" if sizes[key] else f"{'-':>9}"
            print(f"{key:<10} {med[key]:9.2f} {shown}")
        print()
        print(f"pgwarden / strategy time: {med['pgwarden'] / med['strategy']:.3f}  (goal <= 0.2)")
        print(
            f"pgwarden / strategy size: {sizes['pgwarden'] / sizes['strategy']:.3f}  (goal <= 1.0)"
        )
        print(f"pgwarden / raw dump time: {med['pgwarden'] / med['raw']:.3f}  (goal <= 1.5)")
    finally:
        server.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
