"""The monitor thread: periodic sampling, a server going away and coming back, reload, stop,
and the exposition as ``promtool`` sees it."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from prometheus_client import generate_latest
from structlog.testing import capture_logs

from pgwarden.config import Config
from pgwarden.metrics import Metrics
from pgwarden.monitor.snapshot import Snapshot
from pgwarden.monitor.thread import MonitorThread
from tests.pgbouncer import PgBouncerFactory
from tests.pgservers import PgServer, start_pg15, temp_base
from tests.test_monitor_connections import make_config


def wait_for(
    monitor: MonitorThread, predicate: Callable[[Snapshot], bool], timeout: float = 20
) -> Snapshot:
    deadline = time.monotonic() + timeout
    snap = monitor.snapshot
    while time.monotonic() < deadline:
        snap = monitor.store.wait_for(snap.taken_at, 1.0)
        if predicate(snap):
            return snap
    raise AssertionError(f"condition not reached in {timeout} s; last snapshot: {snap}")


def server_up(name: str, up: bool) -> Callable[[Snapshot], bool]:
    def check(snap: Snapshot) -> bool:
        status = snap.server(name)
        return status is not None and status.up is up

    return check


def test_stopped_server_is_reported_down_and_sampling_resumes(workdir: Path) -> None:
    base = temp_base("pgwarden-monitor-")
    server = start_pg15(base)
    metrics = Metrics()
    config = make_config(workdir, [{"name": "own", "dsn": server.dsn()}], interval=0.1)
    monitor = MonitorThread(lambda: config, metrics)
    try:
        with capture_logs() as logs:
            monitor.start()
            assert monitor.thread.name == "monitor"
            wait_for(monitor, server_up("own", True))

            server.stop("immediate")
            down = wait_for(monitor, server_up("own", False))
            status = down.server("own")
            assert status is not None
            assert status.error
            assert status.sample is None
            # several failed cycles: the thread lives on, the counter grows, one log line
            wait_for(monitor, lambda s: s.server_errors.get("own", 0) >= 3)
            assert monitor.thread.is_alive()
            assert metrics.registry.get_sample_value("pgwarden_server_up", {"target": "own"}) == 0
            errors = metrics.registry.get_sample_value(
                "pgwarden_monitor_sample_errors_total", {"target": "own"}
            )
            assert errors is not None
            assert errors >= 3

            server.start()
            back = wait_for(monitor, server_up("own", True))
            status = back.server("own")
            assert status is not None
            assert status.sample is not None
            assert status.sample.version_num // 10000 == 15
            assert metrics.registry.get_sample_value("pgwarden_server_up", {"target": "own"}) == 1
            last = metrics.registry.get_sample_value(
                "pgwarden_monitor_last_sample_timestamp_seconds"
            )
            assert last is not None
            assert abs(last - time.time()) < 10
        events = [e["event"] for e in logs if e.get("name") == "own"]
        assert events.count("cannot sample the server") == 1
        assert events.count("sampling the server again") == 1
    finally:
        monitor.stop()
        if server.is_running():
            server.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)
    assert not monitor.thread.is_alive()


def test_reload_is_picked_up_and_stop_is_prompt(pg18: PgServer, workdir: Path) -> None:
    pg18.create_database("mon_reload")
    dsn = pg18.dsn("mon_reload")
    current = [make_config(workdir, [{"name": "one", "dsn": dsn}], interval=0.1)]
    metrics = Metrics()
    monitor = MonitorThread(lambda: current[0], metrics)
    try:
        monitor.start()
        wait_for(monitor, server_up("one", True))
        # a reload swaps the config reference: the next cycle uses the new one
        current[0] = make_config(
            workdir, [{"name": "two", "dsn": dsn, "pools": [{"application": "api"}]}], interval=0.1
        )
        snap = wait_for(monitor, server_up("two", True))
        assert snap.server("one") is None
        assert snap.app_pool("two", "api") is not None
        assert metrics.registry.get_sample_value("pgwarden_server_up", {"target": "one"}) is None
        assert metrics.registry.get_sample_value("pgwarden_server_up", {"target": "two"}) == 1
        # now the thread waits an hour between cycles; stop() must not
        current[0] = make_config(workdir, [{"name": "three", "dsn": dsn}], interval=3600)
        wait_for(monitor, server_up("three", True))
        started = time.monotonic()
        monitor.stop()
        assert time.monotonic() - started < 5
        assert not monitor.thread.is_alive()
        # the collector leaves with the thread
        assert metrics.registry.get_sample_value("pgwarden_server_up", {"target": "three"}) is None
    finally:
        monitor.stop()
        pg18.drop_database("mon_reload")


def test_own_pool_never_holds_more_than_one_connection(pg18: PgServer, workdir: Path) -> None:
    pg18.create_database("mon_budget")
    config = make_config(
        workdir,
        [{"name": f"t{i}", "dsn": pg18.dsn("mon_budget")} for i in range(3)],
        interval=0.1,
    )
    monitor = MonitorThread(lambda: config, Metrics())
    try:
        monitor.start()
        for _ in range(10):
            wait_for(monitor, server_up("t0", True))
        with psycopg.connect(pg18.dsn(), autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgwarden-monitor'"
            ).fetchone()
        assert row == (1,)
    finally:
        monitor.stop()
        pg18.drop_database("mon_budget")


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", "prometheus"],
            check=True,
            capture_output=True,
            timeout=600,
        )
        found = shutil.which("promtool")
    assert found is not None, "promtool is required (apt-get install prometheus)"
    return found


def test_exposition_passes_promtool(
    pg18: PgServer, pgbouncer_factory: PgBouncerFactory, workdir: Path
) -> None:
    pg18.create_database("mon_prom")
    bouncer = pgbouncer_factory(default_pool_size=2)
    with psycopg.connect(bouncer.dsn("mon_prom"), prepare_threshold=None, autocommit=True) as c:
        c.execute("SELECT 1")
    config = make_config(
        workdir,
        [
            {
                "name": "prom",
                "dsn": pg18.dsn("mon_prom"),
                "pools": [{"application": "api", "processes": 2}],
            },
            {"name": "gone", "dsn": "host=127.0.0.1 port=1 dbname=x user=postgres"},
        ],
        pgbouncer=[{"name": "main", "dsn": bouncer.admin_dsn()}],
    )
    metrics = Metrics()
    monitor = MonitorThread(lambda: config, metrics)
    try:
        snap = monitor.run_once()
        gone = snap.server("gone")
        assert gone is not None
        assert not gone.up
        text = generate_latest(metrics.registry)
        for name in (
            b"pgwarden_server_up",
            b"pgwarden_server_connections{",
            b"pgwarden_application_pool_at_limit_seconds",
            b"pgwarden_pgbouncer_clients{",
            b"pgwarden_pgbouncer_pool_saturation_ratio{",
            b"pgwarden_own_pool_timeouts_total",
            b"pgwarden_monitor_sample_errors_total",
            b"pgwarden_target_server_info",
            b"pgwarden_monitor_last_sample_timestamp_seconds",
            b"pgwarden_build_info",
        ):
            assert name in text, name
        result = subprocess.run(
            [promtool(), "check", "metrics"],
            input=text,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
        assert result.stdout == b""
        assert result.stderr == b""
    finally:
        monitor.stop()
        pg18.drop_database("mon_prom")


# the thread is meant to die with the exception: pytest reports that as a warning
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_bug_ends_the_thread() -> None:
    """Only a bug may end the thread: it is logged and the thread dies (the daemon exits)."""

    def broken() -> Config:
        raise RuntimeError("a bug in the config getter")

    monitor = MonitorThread(broken, Metrics())
    with capture_logs() as logs:
        monitor.start()
        monitor.thread.join(10)
    assert not monitor.thread.is_alive()
    assert any("the monitor thread failed" in e["event"] for e in logs)
    monitor.stop()
