"""What the scale benchmarks share: a real ``pgwarden run`` daemon and the samplers around it.

:class:`RunningDaemon` starts ``pgwarden run -c CONFIG`` as operators do (systemd's
``NOTIFY_SOCKET`` played by the benchmark, so the time to ``READY=1`` is measured), and stops
it with ``SIGTERM``.  :class:`Sampler` reads, every ``period`` seconds in a thread, the RSS of
the daemon and of its child processes (``/proc``) and the connections the server holds
(``pg_stat_activity``, the sampler's own excluded), and keeps the peaks.

:func:`many_databases` builds ``count`` small databases (two tables, a few MB each) on one
server from a template; :func:`config_text` writes a config with one target per database, or
one whole-server target (``databases = "*"``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.pgservers import PgServer  # noqa: E402

from pgwarden.control.client import ControlClient  # noqa: E402

PGWARDEN = Path(sys.executable).parent / "pgwarden"
PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")
HEX = frozenset("0123456789abcdef")


def proc_status(pid: int, field_name: str) -> int:
    """A ``/proc/<pid>/status`` size field (``VmRSS``, ``VmHWM``) in bytes; 0 if gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (its own threads, not its children)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def children(pid: int) -> list[tuple[int, str]]:
    """Every descendant of ``pid`` (pid, command name)."""
    found: list[tuple[int, str]] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                kids = (task / "children").read_text().split()
            except OSError:
                continue
            for kid in map(int, kids):
                try:
                    name = Path(f"/proc/{kid}/comm").read_text().strip()
                except OSError:
                    continue
                found.append((kid, name))
                todo.append(kid)
    return found


def stats(values: Iterable[float]) -> tuple[float, float, float]:
    """median, p99 and max of ``values``."""
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered), p99, ordered[-1]


class RunningDaemon:
    """``pgwarden run`` in its own process, with a notify socket; ``ready_s`` from spawn."""

    def __init__(self, workdir: Path, config: Path, *, log_name: str = "daemon.log") -> None:
        self.workdir = workdir
        notify = workdir / "notify.sock"
        notify.unlink(missing_ok=True)
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(str(notify))
        self._notify.settimeout(0.2)
        env = {**os.environ, "NOTIFY_SOCKET": str(notify)}
        self._log = (workdir / log_name).open("wb")
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [str(PGWARDEN), "run", "-c", str(config)],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            self.ready_s = self._wait_ready(started)
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            raise
        # systemd reads every message: an unread socket fills (10 datagrams) and the daemon's
        # main loop would block in its next STATUS= send
        self._draining = threading.Thread(target=self._drain, name="notify-drain", daemon=True)
        self._draining.start()

    def _drain(self) -> None:
        while self.proc.poll() is None:
            try:
                self._notify.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return

    def _wait_ready(self, started: float, timeout: float = 300) -> float:
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited {self.proc.returncode}; see {self._log.name}")
            try:
                message = self._notify.recv(4096).decode()
            except TimeoutError:
                continue
            if "READY=1" in message.split("\n"):
                return time.monotonic() - started
        raise RuntimeError(f"no READY=1 within {timeout} s")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._draining.join()
        self._log.close()
        self._notify.close()

    def __enter__(self) -> RunningDaemon:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


@dataclass
class Peaks:
    daemon_rss: int = 0
    children_rss: int = 0  # the largest sum over the children at one instant
    child_rss: dict[str, int] = field(default_factory=dict)  # per command name
    connections: int = 0
    by_application: dict[str, int] = field(default_factory=dict)


class Sampler:
    """Peaks of the daemon's RSS, its children's and the server's connections (thread)."""

    def __init__(self, pid: int, pg_dsn: str | None, period: float = 0.1) -> None:
        self.pid, self.period = pid, period
        self.peaks = Peaks()
        self._conn = psycopg.connect(pg_dsn, autocommit=True) if pg_dsn else None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self._conn is not None:
            self._conn.close()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self.sample()

    def sample(self) -> None:
        peaks = self.peaks
        peaks.daemon_rss = max(peaks.daemon_rss, proc_status(self.pid, "VmRSS"))
        total = 0
        for kid, name in children(self.pid):
            rss = proc_status(kid, "VmRSS")
            total += rss
            peaks.child_rss[name] = max(peaks.child_rss.get(name, 0), rss)
        peaks.children_rss = max(peaks.children_rss, total)
        if self._conn is None:
            return
        rows = self._conn.execute(
            "SELECT coalesce(application_name, ''), count(*) FROM pg_stat_activity "
            "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() GROUP BY 1"
        ).fetchall()
        peaks.connections = max(peaks.connections, sum(int(n) for _, n in rows))
        grouped: dict[str, int] = {}
        for app, count in rows:  # pgwarden-dump-<backup id> -> pgwarden-dump-*
            head, _, tail = app.rpartition("-")
            key = f"{head}-*" if head and all(c in HEX for c in tail) else app or "(none)"
            grouped[key] = grouped.get(key, 0) + int(count)
        for app, count in grouped.items():
            peaks.by_application[app] = max(peaks.by_application.get(app, 0), count)


def many_databases(server: PgServer, count: int, rows: int = 20_000) -> list[str]:
    """``count`` databases ``db000``... (two tables, ``rows`` rows with text: a few MB each)."""
    server.create_database("scale_tmpl")
    server.execute(
        "CREATE TABLE customers (id serial PRIMARY KEY, name text, note text);"
        "CREATE TABLE orders (id serial PRIMARY KEY, customer_id int REFERENCES customers,"
        " amount numeric, placed_at timestamptz DEFAULT now());"
        f"INSERT INTO customers (name, note) SELECT 'customer ' || g, repeat(md5(g::text), 3)"
        f" FROM generate_series(1, {rows}) g;"
        f"INSERT INTO orders (customer_id, amount) SELECT 1 + g % {rows}, g * 1.5"
        f" FROM generate_series(1, {rows}) g;",
        "scale_tmpl",
    )
    server.execute("VACUUM ANALYZE", "scale_tmpl")
    names = [f"db{i:03d}" for i in range(count)]
    with server.connect() as conn:
        for name in names:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE scale_tmpl STRATEGY file_copy')
    return names


def config_text(
    workdir: Path,
    server: PgServer,
    databases: list[str],
    *,
    jobs: int = 2,
    whole_server: bool = False,
    metrics_port: int = 0,
    monitor_interval: int = 15,
    log_level: str = "warning",
    priority: str = "auto",
) -> str:
    """A daemon config: one target per database, or one whole-server target over them."""
    head = f"""
[daemon]
state_dir = "{workdir}/state"
socket = "{workdir}/ctl.sock"
max_parallel_jobs = {jobs}
log_level = "{log_level}"
log_format = "json"
shutdown_timeout = 30

[metrics]
listen = "127.0.0.1:{metrics_port}"

[monitor]
interval = {monitor_interval}

[storage]
path = "{workdir}/backups"
"""
    # the example config's schedules (backup daily, drill weekly, prune daily), no retries
    backup = f'  [targets.backup]\n  retries = 0\n  priority = "{priority}"\n'
    verify = ""
    if whole_server:
        listed = ", ".join(f'"{d}"' for d in databases)
        return head + (
            f'[[targets]]\nname = "vps"\ndsn = "{server.uri("postgres")}"\n'
            f'bin_dir = "{server.bin_dir}"\ndatabases = [{listed}]\n{backup}{verify}'
        )
    return head + "".join(
        f'[[targets]]\nname = "{d}"\ndsn = "{server.uri(d)}"\nbin_dir = "{server.bin_dir}"\n'
        f"{backup}{verify}"
        for d in databases
    )


FINISHED = "('complete', 'failed', 'interrupted')"


def finished_backups(workdir: Path) -> tuple[int, int]:
    """(finished backup rows, failed ones) in the daemon's catalog."""
    with sqlite3.connect(f"file:{workdir}/state/catalog.db?mode=ro", uri=True) as db:
        done, failed = db.execute(
            f"SELECT count(*), count(*) FILTER (WHERE status <> 'complete') FROM backups "
            f"WHERE status IN {FINISHED}"
        ).fetchone()
    return int(done), int(failed)


def start_workdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"pgwarden-scale-{prefix}-", dir="/var/tmp"))


def backup_all(
    server: PgServer,
    names: list[str],
    jobs: int,
    whole: bool,
    port: int = 0,
    around: Callable[[], AbstractContextManager[None]] = nullcontext,
    *,
    sample: bool = True,
    priority: str = "auto",
) -> tuple[float, int, Peaks, int]:
    """Start a daemon, back up every database, wait for all: (seconds, failed, peaks, VmHWM).
    ``sample=False``: no :class:`Sampler` (its polling would load the machine measured)."""
    workdir = start_workdir("db")
    try:
        config = workdir / "pgwarden.toml"
        text = config_text(
            workdir,
            server,
            names,
            jobs=jobs,
            whole_server=whole,
            metrics_port=port,
            priority=priority,
        )
        config.write_text(text)
        config.chmod(0o600)
        with RunningDaemon(workdir, config) as daemon:
            client = ControlClient(workdir / "ctl.sock")
            sampler = Sampler(daemon.pid, server.dsn("postgres") if sample else None)
            with sampler if sample else nullcontext(sampler), around():
                started = time.monotonic()
                for target in ["vps"] if whole else names:
                    client.call("backup", {"target": target})
                while (done := finished_backups(workdir))[0] < len(names):
                    time.sleep(0.1)
                secs = time.monotonic() - started
            hwm = proc_status(daemon.pid, "VmHWM")
        return secs, done[1], sampler.peaks, hwm
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
