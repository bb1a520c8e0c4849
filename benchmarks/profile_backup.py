"""Where a backup's CPU goes: CPU-seconds per process and per thread of one ``pgwarden backup``.

Runs one backup in this process, through the same entry ``pgwarden backup`` uses
(:func:`pgwarden.backup.take.take_backup` with a request built as
``commands/backup_cmd.py`` builds it), on a shape of :mod:`benchmarks.shapes`, while a sampler
thread reads, every 50 ms:

* ``/proc/<pid>/stat`` of every child process of this one (``pg_dump``, the ``pg_restore``
  parse while it exists, ``pg_dumpall`` ...), the last value seen counting; the sum is checked
  against ``getrusage(RUSAGE_CHILDREN)`` at the end (the exact figure once they are reaped);
* ``/proc/<pid>/stat`` of every process of the PostgreSQL server (the postmaster's children),
  named by ``pg_stat_activity`` (asked on its own connection every 0.5 s): the backend serving
  pg_dump, the one serving the snapshot facts (``pgwarden-backup``), parallel workers counted
  to their leader, and the server's own processes;
* ``/proc/self/task/<tid>/stat`` of each of pgwarden's threads, named through
  ``threading.enumerate()``'s ``native_id`` (``MainThread``, ``dump-writer_0``,
  ``facts-watch``, the stall watch, the tools' stderr drains ...).

Prints a table: component, CPU-seconds, share of the total, wall time (first to last sample
with it alive), the phases of the backup (from its progress reports), and the machine's busy
CPU-seconds from ``/proc/stat`` over the same time.

    .venv/bin/python benchmarks/profile_backup.py [--shape app|vectors|one_table]
        [--scale N --users N --documents N]   # default: the shape's full size
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "daemon"))

import psycopg  # noqa: E402
from benchmarks.backup import FULL, busy_cpu_s, write_config  # noqa: E402
from benchmarks.shapes import DB, Sizes, cached_server  # noqa: E402

from pgwarden.backup.take import BackupRequest, take_backup  # noqa: E402
from pgwarden.commands.context import command_env  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
INTERVAL = 0.05


def proc_cpu(path: str) -> tuple[float, int] | None:
    """(utime + stime in seconds, ppid) from a ``/proc/.../stat`` file; None when gone."""
    try:
        with open(path) as handle:
            text = handle.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / TICK, int(fields[1])


def comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as handle:
            return handle.read().strip()
    except OSError:
        return "?"


@dataclass
class Component:
    cpu: float = 0.0
    first: float = 0.0
    last: float = 0.0
    base: float = 0.0  # the CPU it had used before the backup started (server processes)


@dataclass
class Sampler:
    """Samples CPU per process and thread into :attr:`seen`, keyed by a stable identity."""

    postmaster: int
    dsn: str
    seen: dict[tuple[str, int], Component] = field(default_factory=dict)
    names: dict[tuple[str, int], str] = field(default_factory=dict)
    phases: list[tuple[float, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    start: float = field(default_factory=time.monotonic)
    baseline: dict[tuple[str, int], float] = field(default_factory=dict)

    def note(self, key: tuple[str, int], cpu: float, base: float = 0.0) -> None:
        now = time.monotonic() - self.start
        item = self.seen.get(key)
        if item is None:
            item = self.seen[key] = Component(0.0, now, now, base)
        item.cpu = cpu - item.base
        item.last = now

    def run(self) -> None:
        activity_at = 0.0
        with psycopg.connect(self.dsn, autocommit=True, application_name="profile") as conn:
            while not self.stop.wait(INTERVAL):
                self.sample()
                if time.monotonic() - activity_at >= 0.5:
                    activity_at = time.monotonic()
                    self.name_backends(conn)
            self.sample()
            self.name_backends(conn)

    def sample(self) -> None:
        me = os.getpid()
        native = {t.native_id: t.name for t in threading.enumerate() if t.native_id}
        for tid in os.listdir("/proc/self/task"):
            got = proc_cpu(f"/proc/self/task/{tid}/stat")
            if got is not None and int(tid) != threading.get_native_id():
                key = ("thread", int(tid))
                if int(tid) in native or key not in self.names:
                    self.names[key] = native.get(int(tid), f"thread {tid}")
                self.note(key, got[0], self.baseline.get(key, 0.0))
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            got = proc_cpu(f"/proc/{entry}/stat")
            if got is None:
                continue
            pid = int(entry)
            if got[1] == me:
                key = ("child", pid)
                self.names.setdefault(key, comm(pid))
                self.note(key, got[0])
            elif got[1] == self.postmaster:
                self.note(("server", pid), got[0], self.baseline.get(("server", pid), 0.0))

    def take_baseline(self) -> None:
        """Server processes and threads that exist before the backup: count only what they
        use from now on."""
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                got = proc_cpu(f"/proc/{entry}/stat")
                if got is not None and got[1] == self.postmaster:
                    self.baseline[("server", int(entry))] = got[0]
        for tid in os.listdir("/proc/self/task"):
            got = proc_cpu(f"/proc/self/task/{tid}/stat")
            if got is not None:
                self.baseline[("thread", int(tid))] = got[0]

    def name_backends(self, conn: psycopg.Connection[Any]) -> None:
        rows = conn.execute(
            "SELECT pid, coalesce(nullif(application_name, ''), backend_type), leader_pid, "
            "backend_type FROM pg_stat_activity"
        ).fetchall()
        apps = {int(r[0]): str(r[1]) for r in rows}
        for pid, app, leader, kind in rows:
            if leader and leader != pid:
                name = f"server: parallel worker of {apps.get(int(leader), leader)}"
            elif kind == "client backend":
                name = f"server: backend of {app}"
            else:
                name = f"server: {kind}"
            self.names.setdefault(("server", int(pid)), name)


def label(key: tuple[str, int], names: dict[tuple[str, int], str]) -> str:
    kind = key[0]
    name = names.get(key, "?")
    if kind == "child":
        return f"process: {name}"
    if kind == "thread":
        if name.startswith("pgwarden-") or name.startswith("pg_"):
            return f"pgwarden thread: {name.rsplit('-', 1)[0]}"
        return f"pgwarden thread: {name}"
    if name.startswith("server: backend of pgwarden-dump"):
        return "server: backend of pg_dump"
    if name == "?":
        return "server: other (exited before it was named)"
    return name.replace("pgwarden-dump-", "pg_dump ")


def table(sampler: Sampler, wall: float, busy: float, children: float) -> None:
    groups: dict[str, Component] = {}
    for key, item in sampler.seen.items():
        if item.cpu < 0.005:
            continue
        name = label(key, sampler.names)
        group = groups.setdefault(name, Component(0.0, item.first, item.last))
        group.cpu += item.cpu
        group.first = min(group.first, item.first)
        group.last = max(group.last, item.last)
    total = sum(g.cpu for g in groups.values())
    print(f"\n{'component':<58} {'CPU-s':>7} {'share':>6} {'wall s':>7}")
    for name, group in sorted(groups.items(), key=lambda kv: -kv[1].cpu):
        share = 100 * group.cpu / total if total else 0.0
        print(f"{name:<58} {group.cpu:7.2f} {share:5.1f}% {group.last - group.first:7.2f}")
    print(f"{'total sampled':<58} {total:7.2f} {100.0:5.1f}% {wall:7.2f}")
    sampled_children = sum(i.cpu for k, i in sampler.seen.items() if k[0] == "child")
    print(
        f"\nchild processes: {sampled_children:.2f} CPU-s sampled, {children:.2f} CPU-s from "
        "getrusage(RUSAGE_CHILDREN) (exact)"
    )
    print(f"machine busy over the backup (/proc/stat, every process): {busy:.2f} CPU-s")
    print(f"backup wall time: {wall:.2f} s")
    print("\nphases (s from start):")
    for at, phase in sampler.phases:
        print(f"  {at:7.2f}  {phase}")


def profile(shape: str, sizes: Sizes) -> None:
    os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp())
    with (
        cached_server(shape, sizes) as server,
        tempfile.TemporaryDirectory(prefix="pgwarden-profile-", dir="/tmp") as tmp,
    ):
        work = Path(tmp)
        size = server.execute(f"SELECT pg_database_size('{DB}')")[0][0]
        print(f"{shape} {sizes}: {int(size) / 1e9:.2f} GB database")  # type: ignore[call-overload]
        config = write_config(work, server)
        postmaster = int((server.datadir / "postmaster.pid").read_text().split()[0])
        sampler = Sampler(postmaster, server.dsn(DB))
        args = argparse.Namespace(config=str(config))
        with command_env(args) as env:
            target = env.config.target("bench")
            last = [""]

            def progress(**fields: Any) -> None:
                phase = str(fields.get("phase", ""))
                if phase != last[0]:
                    last[0] = phase
                    sampler.phases.append((time.monotonic() - sampler.start, phase))

            request = BackupRequest(target, env.config, env.catalog, env.storage, ("manual",))
            request.progress = progress
            sampler.take_baseline()
            thread = threading.Thread(target=sampler.run, name="profile-sampler", daemon=True)
            before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
            busy, sampler.start = busy_cpu_s(), time.monotonic()
            thread.start()
            outcome = take_backup(request)
            wall = time.monotonic() - sampler.start
            busy = busy_cpu_s() - busy
            sampler.stop.set()
            thread.join()
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            children = (after.ru_utime + after.ru_stime) - (
                before_children.ru_utime + before_children.ru_stime
            )
        print(f"backup {outcome.path.name}: {outcome.size_bytes / 1e6:.1f} MB")
        table(sampler, wall, busy, children)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--shape", choices=("vectors", "app", "one_table"), default="app")
    parser.add_argument("--scale", type=int, default=None)
    parser.add_argument("--users", type=int, default=None)
    parser.add_argument("--documents", type=int, default=None)
    args = parser.parse_args()
    full = FULL[args.shape]
    sizes = Sizes(
        scale=args.scale if args.scale is not None else full.scale,
        users=args.users if args.users is not None else full.users,
        documents=args.documents if args.documents is not None else full.documents,
    )
    print("command: " + " ".join([sys.executable, *sys.argv]))
    profile(args.shape, sizes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
