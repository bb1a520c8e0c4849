"""Restore drill speed: pgwarden's full verification against the strategy's own drill and a
stock parallel restore.

Builds the backup benchmark's database (about 1 GB: pgbench data at ``--scale`` plus a
pgvector ``documents`` table with an ivfflat index, :func:`benchmarks.backup.build`) on its own
embedded PostgreSQL 18, takes one backup of each kind, then runs, interleaved, ``--runs``
times each:

* ``strategy``: the seed's quarterly drill -- ``createdb``; ``gunzip -c x.sql.gz | psql``;
  ``SELECT COUNT(*)`` on one table; ``dropdb``;
* ``stock -j2 + counts``: ``createdb``; ``pg_restore -j2`` of the uncompressed custom archive;
  an exact ``count(*)`` of every table; ``dropdb`` (no checksum, no other check);
* ``stock, default archive``: the same drill of the archive ``pg_dump -Fc`` writes by default
  (gzip inside, each table's data inflated by the worker restoring it) -- what an operator
  restoring by hand usually has;
* ``floor``: the least any drill of a *compressed* backup does, with stock tools only -- the
  stock drill, plus ``openssl sha256`` of a ``zstd -1`` copy of that archive and ``zstd -d`` of
  it to a file first (the copy keeps pg_dump's data offsets: no scan needed by the workers);
* ``pgwarden verify``: the real CLI, every step and check -- headroom, SHA-256 (spooling the
  ``.dump.zst`` for ``pg_restore --jobs=2``), table of contents, extensions, restore, exact
  counts of every table, extensions, vector probes, drop;
* ``pgwarden, streamed``: the same drill with the ``.dump.zst`` decompressed straight into a
  serial ``pg_restore`` (how the spool-or-stream choice was measured).

Each timed drill starts after a ``CHECKPOINT`` and a ``sync`` (untimed), so that none pays for
the WAL and dirty pages of the one before.  Prints, for each, the median time and the median
CPU-seconds the whole machine was busy (client tools and server), then the goals' ratios:
pgwarden <= 0.7x the strategy's drill and <= 1.15x stock ``pg_restore -j2`` plus the counts.

    .venv/bin/python benchmarks/verify.py [--scale 60] [--vectors 100000] [--runs 3]

Needs the ``openssl`` and ``zstd`` commands (the floor drill).
"""

from __future__ import annotations

import argparse
import compileall
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import tomli_w  # noqa: E402
from tests.pgservers import PgServer, start_pg18, temp_base  # noqa: E402

DB = "bench"
TABLES = ("pgbench_accounts", "pgbench_branches", "pgbench_history", "pgbench_tellers", "documents")


def _build_from_backup_benchmark() -> Any:
    spec = importlib.util.spec_from_file_location("bench_backup", ROOT / "benchmarks/backup.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build


def _run(argv: list[str] | str, **kw: Any) -> None:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)


def busy_cpu_s() -> float:
    """CPU-seconds the machine has been busy (user, nice, system, irq, softirq) since boot."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:8]]
    return (fields[0] + fields[1] + fields[2] + fields[5] + fields[6]) / os.sysconf("SC_CLK_TCK")


def strategy_drill(server: PgServer, sql_gz: Path) -> None:
    b, dsn = server.bin_dir, server.dsn
    _run(
        [
            str(b / "createdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(server.port),
            "-U",
            "postgres",
            "restore_test",
        ]
    )
    _run(f"gunzip -c {sql_gz} | {b / 'psql'} -q '{dsn('restore_test')}'", shell=True)
    _run([str(b / "psql"), dsn("restore_test"), "-c", "SELECT COUNT(*) FROM pgbench_accounts;"])
    _run(
        [
            str(b / "dropdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(server.port),
            "-U",
            "postgres",
            "restore_test",
        ]
    )


def floor_drill(server: PgServer, compressed: Path, dump: Path) -> None:
    """The stock drill of ``compressed`` (a zstd copy of the stock archive): checked and
    decompressed to ``dump`` first, removed afterwards."""
    _run(["openssl", "dgst", "-sha256", str(compressed)])
    _run(["zstd", "-d", "-q", "-f", "-o", str(dump), str(compressed)])
    try:
        stock_drill(server, dump)
    finally:
        dump.unlink()


def stock_drill(server: PgServer, dump: Path) -> None:
    b, dsn = server.bin_dir, server.dsn
    _run(
        [
            str(b / "createdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(server.port),
            "-U",
            "postgres",
            "stock_test",
        ]
    )
    _run([str(b / "pg_restore"), "-j2", "--no-owner", "-d", dsn("stock_test"), str(dump)])
    counts = "; ".join(f"SELECT count(*) FROM {t}" for t in TABLES)
    _run([str(b / "psql"), dsn("stock_test"), "-c", counts])
    _run(
        [
            str(b / "dropdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(server.port),
            "-U",
            "postgres",
            "stock_test",
        ]
    )


def pgwarden_verify(config: Path) -> dict[str, Any]:
    out = subprocess.run(
        [str(ROOT / ".venv/bin/pgwarden"), "verify", "-c", str(config), DB, "--json"],
        check=True,
        capture_output=True,
    )
    report: dict[str, Any] = json.loads(out.stdout)
    assert report["passed"], report
    return report


def pgwarden_streamed(config: Path) -> dict[str, Any]:
    code = (
        "import json, sys\n"
        "from pgwarden import config as c, logsetup\n"
        "logsetup.configure('warning', 'auto', sys.stderr)\n"
        "from pgwarden.restore.drill import VerifyRequest, run_verification\n"
        "from pgwarden.catalog import open_catalog\n"
        "from pgwarden.storage import LocalStorage\n"
        f"cfg = c.load({str(config)!r})\n"
        "cat = open_catalog(cfg.daemon.effective_catalog_url)\n"
        "o = run_verification(VerifyRequest(cfg.targets[0], cfg, cat, "
        "LocalStorage(cfg.storage.path), restore_mode='stream'))\n"
        "print(json.dumps(o.as_dict()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    report: dict[str, Any] = json.loads(out.stdout)
    return report


def settle(server: PgServer) -> None:
    """Before each timed drill (untimed): a checkpoint and a sync, so that no drill pays for
    the WAL and dirty pages the previous one left behind."""
    server.execute("CHECKPOINT")
    os.sync()
    time.sleep(1.0)


def _config(work: Path, server: PgServer) -> Path:
    doc = {
        "daemon": {
            "state_dir": str(work / "state"),
            "socket": str(work / "ctl.sock"),
            "log_level": "warning",
        },
        "storage": {"path": str(work / "backups")},
        "metrics": {"listen": "127.0.0.1:0"},
        "targets": [
            {
                "name": DB,
                "dsn": server.uri(DB),
                "bin_dir": str(server.bin_dir),
                "backup": {"retries": 0},
                "verify": {"jobs": 2},
            }
        ],
    }
    path = work / "pgwarden.toml"
    path.write_text(tomli_w.dumps(doc))
    path.chmod(0o600)
    return path


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
    base = temp_base("pgwarden-bench-verify-")
    server = start_pg18(base)
    work = Path(tempfile.mkdtemp(prefix="pgwarden-bench-verify-work-", dir="/tmp"))
    work.chmod(0o755)
    try:
        t0 = time.monotonic()
        _build_from_backup_benchmark()(server, args.scale, args.vectors)
        size = server.execute(f"SELECT pg_database_size('{DB}')")[0][0]
        print(f"database: {int(size) / 2**30:.2f} GiB built in {time.monotonic() - t0:.0f} s")
        sql_gz, dump = work / "strategy.sql.gz", work / "stock.dump"
        floor_zst, floor_dump = work / "floor.dump.zst", work / "floor.dump"
        default_dump = work / "default.dump"
        _run(f"{server.bin_dir / 'pg_dump'} '{server.dsn(DB)}' | gzip > {sql_gz}", shell=True)
        _run([str(server.bin_dir / "pg_dump"), "-Fc", "-Z0", "-f", str(dump), server.dsn(DB)])
        _run(["zstd", "-1", "-q", "-o", str(floor_zst), str(dump)])
        _run([str(server.bin_dir / "pg_dump"), "-Fc", "-f", str(default_dump), server.dsn(DB)])
        config = _config(work, server)
        _run([str(ROOT / ".venv/bin/pgwarden"), "backup", "-c", str(config), DB])
        zst = next((work / "backups" / DB).glob("*.dump.zst"))
        print(
            f"archives: {sql_gz.stat().st_size / 2**20:.0f} MiB .sql.gz, "
            f"{dump.stat().st_size / 2**20:.0f} MiB .dump, "
            f"{default_dump.stat().st_size / 2**20:.0f} MiB default .dump, "
            f"{zst.stat().st_size / 2**20:.0f} MiB .dump.zst"
        )
        drills: dict[str, Callable[[], dict[str, Any] | None]] = {
            "strategy": lambda: strategy_drill(server, sql_gz),
            "stock": lambda: stock_drill(server, dump),
            "stock_default": lambda: stock_drill(server, default_dump),
            "floor": lambda: floor_drill(server, floor_zst, floor_dump),
            "pgwarden": lambda: pgwarden_verify(config),
            "streamed": lambda: pgwarden_streamed(config),
        }
        times: dict[str, list[float]] = {k: [] for k in drills}
        cpu: dict[str, list[float]] = {k: [] for k in drills}
        steps: dict[str, dict[str, float]] = {}
        for run in range(args.runs):
            for key, drill in drills.items():
                settle(server)
                start, busy = time.monotonic(), busy_cpu_s()
                report = drill()
                times[key].append(time.monotonic() - start)
                cpu[key].append(busy_cpu_s() - busy)
                if report is not None:
                    steps[key] = {c["name"]: c["duration_s"] for c in report["checks"]}
            print(f"run {run + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items()))
        med = {k: statistics.median(v) for k, v in times.items()}
        rows = [
            ("strategy drill (createdb; gunzip | psql; COUNT(*) users-like; dropdb)", "strategy"),
            ("stock pg_restore -j2 + exact count(*) of every table", "stock"),
            ("  the same, of pg_dump -Fc's default archive (gzip inside)", "stock_default"),
            ("floor: stock + openssl sha256 + zstd -d of a compressed copy first", "floor"),
            ("pgwarden verify (checksum, TOC, restore -j2, every check, drop)", "pgwarden"),
            ("pgwarden verify, .dump.zst streamed into serial pg_restore", "streamed"),
        ]
        print(f"\nmedian of {args.runs} interleaved runs, {int(size) / 2**30:.2f} GiB database")
        print(f"{'':68} {'time':>7} {'CPU-s':>6} {'/strategy':>9} {'/stock':>7} {'/floor':>7}")
        for label, key in rows:
            print(
                f"{label:68} {med[key]:6.1f}s {statistics.median(cpu[key]):6.1f} "
                f"{med[key] / med['strategy']:8.2f}x {med[key] / med['stock']:6.2f}x "
                f"{med[key] / med['floor']:6.2f}x"
            )
        for key in ("pgwarden", "streamed"):
            print(
                f"{key} steps (last run): "
                + ", ".join(f"{n} {s:.2f}" for n, s in steps[key].items())
            )
        # ratios within each run (its drills ran minutes apart, under the same load), then
        # their median: steadier than a ratio of medians on a shared machine
        paired = {
            other: statistics.median(
                p / o for p, o in zip(times["pgwarden"], times[other], strict=True)
            )
            for other in ("strategy", "stock", "stock_default", "floor")
        }
        print(
            f"median of per-run ratios: pgwarden/strategy {paired['strategy']:.2f}x, "
            f"pgwarden/stock {paired['stock']:.2f}x, "
            f"pgwarden/stock of the default archive {paired['stock_default']:.2f}x, "
            f"pgwarden/floor {paired['floor']:.2f}x"
        )
        ok1 = med["pgwarden"] <= 0.7 * med["strategy"]
        ok2 = med["pgwarden"] <= 1.15 * med["stock"]
        ok3 = med["pgwarden"] <= 1.15 * med["stock_default"]
        print(
            f"\ngoal pgwarden <= 0.7x strategy: {'met' if ok1 else 'NOT met'}; "
            f"<= 1.15x stock -j2 + counts: {'met' if ok2 else 'NOT met'} (medians); "
            f"against the default archive: {'met' if ok3 else 'NOT met'}"
        )
    finally:
        if server.is_running():
            server.stop("fast")
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
