"""The CPU a streamed backup spends proving its custom archive whole: the in-line framing check
against the ``pg_restore --file=/dev/null`` it replaced.

Takes one archive -- ``pg_dump -Fc -Z0`` of the ``--shape`` database (default ``app``,
:func:`benchmarks.shapes.cached_server`, database ``bench``) written through a pipe, as a
backup writes it -- and runs over the same bytes, interleaved, ``--runs`` times each:

* ``read``: the file read in 1 MiB chunks into one reused buffer, nothing else (the backup
  reads every chunk anyway, to compress it: the floor under both checks);
* ``framing``: the same reads, each chunk fed to
  :class:`pgwarden.archive.customframes.FramingCheck` (what a backup runs now);
* ``pg_restore``: ``pg_restore --file=/dev/null`` fed the bytes through a pipe by
  ``splice(2)`` (no copy through Python; the backup used ``tee(2)``), as the backup ran before.

Prints each variant's median wall time and CPU-seconds (this process's for ``read`` and
``framing``, pg_restore's own for ``pg_restore``), the framing check's CPU above the bare
reads, and the ratio of the two checks' CPU.

    flock /work/tmp/bench.lock .venv/bin/python benchmarks/framing.py [--shape app]
        [--scale 30] [--users 200000] [--documents 120000] [--runs 5]

The archive is kept in ``/var/tmp/pgwarden-bench-framing`` for the next run of the same
shape and sizes (``--fresh`` dumps it again).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.shapes import DB, Sizes, cached_server  # noqa: E402

from pgwarden.archive.customframes import FramingCheck  # noqa: E402

CHUNK = 1 << 20
KEEP = Path("/var/tmp/pgwarden-bench-framing")
VARIANTS = ("read", "framing", "pg_restore")


def archive_for(shape: str, sizes: Sizes, fresh: bool) -> tuple[Path, Path]:
    """The archive of ``shape`` at ``sizes`` (dumped through a pipe), and a pg_restore."""
    KEEP.mkdir(exist_ok=True)
    path = KEEP / f"{shape}-s{sizes.scale}-u{sizes.users}-d{sizes.documents}.dump"
    with cached_server(shape, sizes) as server:
        pg_restore = KEEP / "pg_restore"
        if not pg_restore.exists():
            os.symlink(server.bin_dir / "pg_restore", pg_restore)
        if fresh or not path.exists():
            partial = path.with_suffix(".partial")
            argv = [str(server.bin_dir / "pg_dump"), "-Fc", "-Z0", server.dsn(DB)]
            with subprocess.Popen(argv, stdout=subprocess.PIPE) as dump, partial.open("wb") as out:
                assert dump.stdout is not None
                shutil.copyfileobj(dump.stdout, out, CHUNK)
            if dump.returncode != 0:
                raise SystemExit(f"pg_dump failed: {dump.returncode}")
            partial.rename(path)
    return path, pg_restore


def _reads(path: Path, each: Callable[[memoryview], None] | None) -> None:
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    with path.open("rb", buffering=0) as fh:
        while got := fh.readinto(buffer):
            chunk = view if got == CHUNK else view[:got]
            if each is not None:
                each(chunk)


def run_read(path: Path, _tool: Path) -> float:
    started = time.process_time()
    _reads(path, None)
    return time.process_time() - started


def run_framing(path: Path, _tool: Path) -> float:
    started = time.process_time()
    frames = FramingCheck()
    _reads(path, frames.feed)
    framing = frames.finish()
    spent = time.process_time() - started
    assert framing.size_bytes == path.stat().st_size
    return spent


def run_pg_restore(path: Path, tool: Path) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with subprocess.Popen(
        [str(tool), "--file=/dev/null"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL
    ) as restore:
        assert restore.stdin is not None
        with path.open("rb", buffering=0) as fh:
            size, offset = path.stat().st_size, 0
            try:
                while offset < size:
                    moved = os.splice(fh.fileno(), restore.stdin.fileno(), size - offset)
                    offset += moved
            finally:
                restore.stdin.close()
    if restore.returncode != 0:
        raise SystemExit(f"pg_restore failed: {restore.returncode}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


RUNNERS: dict[str, Callable[[Path, Path], float]] = {
    "read": run_read,
    "framing": run_framing,
    "pg_restore": run_pg_restore,
}


def measure(path: Path, tool: Path, runs: int) -> tuple[dict[str, list[float]], ...]:
    wall: dict[str, list[float]] = {v: [] for v in VARIANTS}
    cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
    _reads(path, None)  # into the page cache: every variant reads it from memory
    for run in range(runs):
        order = VARIANTS[run % 3 :] + VARIANTS[: run % 3]  # a different one first each round
        for variant in order:
            started = time.monotonic()
            cpu[variant].append(RUNNERS[variant](path, tool))
            wall[variant].append(time.monotonic() - started)
    return wall, cpu


def report(path: Path, wall: dict[str, list[float]], cpu: dict[str, list[float]]) -> None:
    size = path.stat().st_size
    runs = len(wall["read"])
    print(f"\n{path.name}: {size / 2**30:.2f} GiB archive, median of {runs} interleaved runs")
    print(f"{'variant':<12} {'wall s':>8} {'CPU s':>8} {'MB/s (wall)':>12}")
    med_wall = {v: statistics.median(wall[v]) for v in VARIANTS}
    med_cpu = {v: statistics.median(cpu[v]) for v in VARIANTS}
    for v in VARIANTS:
        print(f"{v:<12} {med_wall[v]:>8.2f} {med_cpu[v]:>8.2f} {size / 1e6 / med_wall[v]:>12.0f}")
    net = [f - r for f, r in zip(cpu["framing"], cpu["read"], strict=True)]
    ratio = [n / p for n, p in zip(net, cpu["pg_restore"], strict=True)]
    print(
        f"framing check above the bare reads: {statistics.median(net):.2f} CPU-s "
        f"({statistics.median(net) / (size / 2**30):.2f} CPU-s per GiB)"
    )
    print(
        f"framing check / pg_restore CPU: {statistics.median(ratio):.3f}x "
        f"(median of per-run ratios; wall {med_wall['framing'] / med_wall['pg_restore']:.3f}x)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="app", choices=("app", "vectors", "one_table"))
    parser.add_argument("--scale", type=int, default=Sizes.scale)
    parser.add_argument("--users", type=int, default=Sizes.users)
    parser.add_argument("--documents", type=int, default=Sizes.documents)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--fresh", action="store_true", help="dump the archive again")
    args = parser.parse_args()
    sizes = Sizes(scale=args.scale, users=args.users, documents=args.documents)
    path, tool = archive_for(args.shape, sizes, args.fresh)
    wall, cpu = measure(path, tool, args.runs)
    report(path, wall, cpu)
    print(
        "reproduce: flock /work/tmp/bench.lock .venv/bin/python benchmarks/framing.py "
        f"--shape {args.shape} --scale {args.scale} --users {args.users} "
        f"--documents {args.documents} --runs {args.runs}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
