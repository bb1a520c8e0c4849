"""Restore drill speed: pgwarden's full verification against the strategy's own drill and a
stock parallel restore, on each database shape of :mod:`benchmarks.shapes`.

For every ``--shape`` (default ``app`` and ``one_table``; ``all`` adds ``vectors``) it takes a
copy of the cached database (:func:`benchmarks.shapes.cached_server`, database ``bench``),
one backup of each kind, then runs, interleaved, ``--runs`` times each:

* ``strategy``: the seed's quarterly drill -- ``createdb``; ``gunzip -c x.sql.gz | psql``;
  ``SELECT COUNT(*)`` on one table; ``dropdb``;
* ``stock``: ``createdb``; ``pg_restore -j2`` of the uncompressed custom archive; an exact
  ``count(*)`` of every table; ``dropdb`` (no checksum, no other check);
* ``stock_default``: the same drill of the archive ``pg_dump -Fc`` writes by default (gzip
  inside, each table's data inflated by the worker restoring it);
* ``floor``: the least a drill of a *compressed* backup does with stock tools -- the stock
  drill, plus ``openssl sha256`` of a ``zstd -1`` copy of that archive and ``zstd -d`` of it;
* ``pgwarden``: ``pgwarden verify`` (the real CLI, every step and check: headroom, SHA-256,
  table of contents, extensions, restore, exact counts of every table, vector probes, drop);
* ``unsplit``: ``pgwarden verify`` with ``[targets.verify] split_tables = false``: stock
  ``pg_restore --jobs`` loads the data, a table per worker, as before drills split tables;
* ``daemon``: the same drill as the daemon runs it on schedule -- ``pgwarden ctl verify --wait``
  to a ``pgwarden run`` started once per shape (no Python start-up or imports per drill);
* ``spooled`` / ``streamed``: the same drill with the ``.dump.zst`` restore forced to spool
  for ``pg_restore --jobs=2`` or to stream into a serial ``pg_restore`` (``restore_mode``).

Each timed drill starts after a ``CHECKPOINT`` and a ``sync`` (untimed).  Prints, per shape,
each variant's median time and the median CPU-seconds the whole machine was busy (client
tools and server), pgwarden's per-step times, and the ratios against the goals: pgwarden
<= 0.7x the strategy's drill on ``app``, <= 1.0x on ``one_table``.

    .venv/bin/python benchmarks/verify.py [--shape app]
        [--scale 30] [--users 200000] [--documents 120000] [--runs 3] [--variants a,b]

Needs the ``openssl`` and ``zstd`` commands (the floor drill).
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import tomli_w  # noqa: E402
from benchmarks.scale_common import RunningDaemon  # noqa: E402
from benchmarks.shapes import DB, TABLES, Sizes, cached_server  # noqa: E402
from tests.pgservers import PgServer  # noqa: E402

#: the goal per shape: pgwarden's drill at most this many times the strategy's
GOALS = {"app": 0.7, "one_table": 1.0, "vectors": 0.7}
VARIANTS = (
    "strategy",
    "stock",
    "stock_default",
    "floor",
    "pgwarden",
    "unsplit",
    "daemon",
    "spooled",
    "streamed",
)
LABELS = {
    "strategy": "strategy (createdb; gunzip | psql; COUNT(*) one table; dropdb)",
    "stock": "stock pg_restore -j2 + exact count(*) of every table",
    "stock_default": "  the same, of pg_dump -Fc's default archive (gzip inside)",
    "floor": "floor: stock + openssl sha256 + zstd -d of a compressed copy",
    "pgwarden": "pgwarden verify (every step and check, default mode)",
    "unsplit": "pgwarden verify, split_tables = false (pg_restore loads the data)",
    "daemon": "the daemon's drill (ctl verify --wait to pgwarden run)",
    "spooled": "pgwarden verify, .dump.zst spooled for pg_restore --jobs=2",
    "streamed": "pgwarden verify, .dump.zst streamed into a serial pg_restore",
}


def _run(argv: list[str] | str, **kw: Any) -> None:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)


def busy_cpu_s() -> float:
    """CPU-seconds the machine has been busy (user, nice, system, irq, softirq) since boot."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:8]]
    return (fields[0] + fields[1] + fields[2] + fields[5] + fields[6]) / os.sysconf("SC_CLK_TCK")


def server_cpu_s(server: PgServer) -> float:
    """CPU-seconds the server's processes used since it started: the postmaster's own and
    its reaped children's (backends, workers), plus its live children's."""
    tick = os.sysconf("SC_CLK_TCK")
    pid = int((server.datadir / "postmaster.pid").read_text().split()[0])

    def stat(p: int) -> list[str]:
        with open(f"/proc/{p}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()

    total = sum(int(v) for v in stat(pid)[11:15])
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            total += sum(int(v) for v in stat(int(child))[11:13])
        except (FileNotFoundError, ProcessLookupError):  # a child that just exited
            continue
    return total / tick


def client_cpu_s() -> float:
    """CPU-seconds of this benchmark's finished child processes (tools, pgwarden)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _db_tool(server: PgServer, tool: str, name: str) -> None:
    host = ["-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres"]
    _run([str(server.bin_dir / tool), *host, name])


def strategy_drill(server: PgServer, sql_gz: Path, table: str) -> None:
    b, dsn = server.bin_dir, server.dsn
    _db_tool(server, "createdb", "restore_test")
    _run(f"gunzip -c {sql_gz} | {b / 'psql'} -q '{dsn('restore_test')}'", shell=True)
    _run([str(b / "psql"), dsn("restore_test"), "-c", f"SELECT COUNT(*) FROM {table};"])
    _db_tool(server, "dropdb", "restore_test")


def stock_drill(server: PgServer, dump: Path, tables: tuple[str, ...]) -> None:
    b, dsn = server.bin_dir, server.dsn
    _db_tool(server, "createdb", "stock_test")
    _run([str(b / "pg_restore"), "-j2", "--no-owner", "-d", dsn("stock_test"), str(dump)])
    counts = "; ".join(f"SELECT count(*) FROM {t}" for t in tables)
    _run([str(b / "psql"), dsn("stock_test"), "-c", counts])
    _db_tool(server, "dropdb", "stock_test")


def floor_drill(server: PgServer, compressed: Path, dump: Path, tables: tuple[str, ...]) -> None:
    """The stock drill of ``compressed`` (a zstd copy of the stock archive), checked and
    decompressed to ``dump`` first, removed afterwards."""
    _run(["openssl", "dgst", "-sha256", str(compressed)])
    _run(["zstd", "-d", "-q", "-f", "-o", str(dump), str(compressed)])
    try:
        stock_drill(server, dump, tables)
    finally:
        dump.unlink()


def pgwarden_verify(config: Path) -> dict[str, Any]:
    out = subprocess.run(
        [str(ROOT / ".venv/bin/pgwarden"), "verify", "-c", str(config), DB, "--json"],
        check=True,
        capture_output=True,
    )
    report: dict[str, Any] = json.loads(out.stdout)
    assert report["passed"], report
    return report


def daemon_verify(config: Path) -> None:
    """The drill as the daemon runs it on schedule: ``ctl verify --wait`` to a running
    ``pgwarden run`` (no Python start-up or imports per drill, as a scheduled drill pays none)."""
    argv = [str(ROOT / ".venv/bin/pgwarden"), "ctl", "verify", "-c", str(config), "--wait", DB]
    subprocess.run(argv, check=True, capture_output=True)


def pgwarden_mode(config: Path, mode: str) -> dict[str, Any]:
    """The drill through :func:`run_verification` with ``restore_mode`` forced."""
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
        f"LocalStorage(cfg.storage.path), restore_mode={mode!r}))\n"
        "print(json.dumps(o.as_dict()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    report: dict[str, Any] = json.loads(out.stdout)
    assert report["passed"], report
    return report


def settle(server: PgServer) -> None:
    """Before each timed drill (untimed): a checkpoint and a sync, so that no drill pays for
    the WAL and dirty pages the previous one left behind."""
    server.execute("CHECKPOINT")
    os.sync()
    time.sleep(1.0)


def _config(work: Path, server: PgServer, *, split_tables: bool = True) -> Path:
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
                "verify": {"jobs": 2, "split_tables": split_tables},
            }
        ],
    }
    path = work / ("pgwarden.toml" if split_tables else "pgwarden-unsplit.toml")
    path.write_text(tomli_w.dumps(doc))
    path.chmod(0o600)
    return path


def _artifacts(server: PgServer, work: Path) -> dict[str, Path]:
    """Every variant's backup of :data:`DB`, taken once."""
    paths = {
        "sql_gz": work / "strategy.sql.gz",
        "dump": work / "stock.dump",
        "floor_zst": work / "floor.dump.zst",
        "floor_dump": work / "floor.dump",
        "default_dump": work / "default.dump",
        "config": _config(work, server),
        "config_unsplit": _config(work, server, split_tables=False),
    }
    pg_dump, dsn = server.bin_dir / "pg_dump", server.dsn(DB)
    _run(f"{pg_dump} '{dsn}' | gzip > {paths['sql_gz']}", shell=True)
    _run([str(pg_dump), "-Fc", "-Z0", "-f", str(paths["dump"]), dsn])
    _run(["zstd", "-1", "-q", "-o", str(paths["floor_zst"]), str(paths["dump"])])
    _run([str(pg_dump), "-Fc", "-f", str(paths["default_dump"]), dsn])
    _run([str(ROOT / ".venv/bin/pgwarden"), "backup", "-c", str(paths["config"]), DB])
    paths["zst"] = next((work / "backups" / DB).glob("*.dump.zst"))
    sizes = ", ".join(
        f"{paths[k].stat().st_size / 2**20:.0f} MiB {k}"
        for k in ("sql_gz", "dump", "default_dump", "zst")
    )
    print(f"archives: {sizes}", flush=True)
    return paths


def _drills(
    server: PgServer, shape: str, paths: dict[str, Path]
) -> dict[str, Callable[[], dict[str, Any] | None]]:
    tables = TABLES[shape]
    config = paths["config"]
    return {
        "strategy": lambda: strategy_drill(server, paths["sql_gz"], tables[0]),
        "stock": lambda: stock_drill(server, paths["dump"], tables),
        "stock_default": lambda: stock_drill(server, paths["default_dump"], tables),
        "floor": lambda: floor_drill(server, paths["floor_zst"], paths["floor_dump"], tables),
        "pgwarden": lambda: pgwarden_verify(config),
        "unsplit": lambda: pgwarden_verify(paths["config_unsplit"]),
        "daemon": lambda: daemon_verify(config),
        "spooled": lambda: pgwarden_mode(config, "spool"),
        "streamed": lambda: pgwarden_mode(config, "stream"),
    }


@dataclass
class Measured:
    times: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)
    server: dict[str, list[float]] = field(default_factory=dict)
    client: dict[str, list[float]] = field(default_factory=dict)
    steps: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    modes: dict[str, str] = field(default_factory=dict)
    #: the last run's restore detail per variant (its phases)
    restores: dict[str, str] = field(default_factory=dict)


def measure(
    server: PgServer, drills: dict[str, Callable[[], dict[str, Any] | None]], runs: int
) -> Measured:
    m = Measured(*({k: [] for k in drills} for _ in range(5)))  # type: ignore[arg-type]
    for run in range(runs):
        for key, drill in drills.items():
            settle(server)
            start, busy = time.monotonic(), busy_cpu_s()
            server_cpu, client_cpu = server_cpu_s(server), client_cpu_s()
            report = drill()
            m.times[key].append(time.monotonic() - start)
            m.cpu[key].append(busy_cpu_s() - busy)
            m.server[key].append(server_cpu_s(server) - server_cpu)
            m.client[key].append(client_cpu_s() - client_cpu)
            if report is not None:
                m.steps[key].append({c["name"]: c["duration_s"] for c in report["checks"]})
                m.modes[key] = report.get("restore_mode", "")
                m.restores[key] = next(
                    (c["detail"] for c in report["checks"] if c["name"] == "restore"), ""
                )
        print(f"run {run + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in m.times.items()))
    return m


def report(shape: str, size_gib: float, m: Measured, runs: int) -> bool:
    """Print the table of one shape; whether pgwarden's drill met the shape's goal."""
    med = {k: statistics.median(v) for k, v in m.times.items()}
    base = "strategy" if "strategy" in med else next(iter(med))
    print(f"\n{shape}: median of {runs} interleaved runs, {size_gib:.2f} GiB database")
    print(f"{'':64} {'time':>7} {'/' + base:>10} {'machine':>8} {'server':>7} {'tools':>6}")
    for key in m.times:
        cpu = [statistics.median(c[key]) for c in (m.cpu, m.server, m.client)]
        print(
            f"{LABELS[key]:64} {med[key]:6.1f}s {med[key] / med[base]:9.2f}x "
            f"{cpu[0]:7.1f}s {cpu[1]:6.1f}s {cpu[2]:5.1f}s"
        )
    print("(CPU-seconds: the whole machine's, the server's processes', the drill's own tools')")
    for key, steps in m.steps.items():
        if steps:
            names = steps[0].keys()
            cells = ", ".join(f"{n} {statistics.median(s[n] for s in steps):.2f}" for n in names)
            print(f"{key} ({m.modes.get(key, '')}) steps, medians in s: {cells}")
            print(f"  last restore: {m.restores.get(key, '')}")
    goal = GOALS[shape]
    met = True
    for key in ("pgwarden", "unsplit", "daemon", "spooled", "streamed"):
        if key in med and base == "strategy":
            # ratios within each run (same load), then their median: steadier on a shared box
            paired = statistics.median(
                p / s for p, s in zip(m.times[key], m.times["strategy"], strict=True)
            )
            ok = med[key] <= goal * med["strategy"]
            met = met and (ok or key != "pgwarden")
            print(
                f"goal {key} <= {goal}x strategy on {shape}: {med[key] / med[base]:.2f}x "
                f"(median of per-run ratios {paired:.2f}x): {'met' if ok else 'NOT met'}"
            )
    return met


def run_shape(shape: str, sizes: Sizes, runs: int, variants: tuple[str, ...]) -> bool:
    with cached_server(shape, sizes) as server:
        size = int(server.execute(f"SELECT pg_database_size('{DB}')")[0][0]) / 2**30
        print(f"\n== {shape} {sizes}: {size:.2f} GiB", flush=True)
        work = Path(tempfile.mkdtemp(prefix="pgwarden-bench-verify-work-", dir="/var/tmp"))
        work.chmod(0o755)
        try:
            paths = _artifacts(server, work)
            drills = {k: v for k, v in _drills(server, shape, paths).items() if k in variants}
            if "daemon" not in variants:
                return report(shape, size, measure(server, drills, runs), runs)
            with RunningDaemon(work, paths["config"]):
                return report(shape, size, measure(server, drills, runs), runs)
        finally:
            shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shape", action="append", choices=("app", "one_table", "vectors", "all"), default=[]
    )
    parser.add_argument("--scale", type=int, default=30)
    parser.add_argument("--users", type=int, default=Sizes.users)
    parser.add_argument("--documents", type=int, default=Sizes.documents)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    shapes = args.shape or ["app", "one_table"]
    if "all" in shapes:
        shapes = ["app", "one_table", "vectors"]
    variants = tuple(v for v in args.variants.split(",") if v)
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; known: {', '.join(VARIANTS)}")
    os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp())
    # pgwarden as installed from a wheel, whose modules come compiled: without this, a checkout
    # run with PYTHONDONTWRITEBYTECODE set compiles them at every CLI start (~0.2 s here)
    compileall.compile_dir(str(ROOT / "daemon" / "pgwarden"), quiet=1)
    print("command: " + " ".join([Path(sys.executable).name, *sys.argv]))
    met = True
    for shape in shapes:
        sizes = Sizes(args.scale, args.users, args.documents)
        if shape == "one_table":
            sizes = Sizes(scale=args.scale)  # one cache entry whatever --users/--documents say
        met = run_shape(shape, sizes, args.runs, variants) and met
    print(f"\nall goals {'met' if met else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
