"""Server and application-pool saturation, sampled from a real PostgreSQL 18."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy.exc
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from pgwarden.config import Config, parse
from pgwarden.monitor.connections import OTHER, UNSET, bound_labels
from pgwarden.monitor.dbchecks import database_checks
from pgwarden.monitor.engines import EngineCache, ServerKey, plan_servers
from pgwarden.monitor.sampler import Sampler
from pgwarden.monitor.snapshot import MonitorCollector, SnapshotStore
from tests.pgservers import PgServer


def make_config(
    workdir: Path,
    targets: list[dict[str, Any]],
    *,
    pgbouncer: list[dict[str, Any]] | None = None,
    **monitor: Any,
) -> Config:
    data: dict[str, Any] = {
        "daemon": {"state_dir": str(workdir / "state")},
        "storage": {"path": str(workdir / "backups")},
        "monitor": {"interval": 0.2, "statement_timeout": 5, **monitor},
        "targets": targets,
    }
    if pgbouncer:
        data["pgbouncer"] = pgbouncer
    return parse(data, workdir / "pgwarden.toml")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@contextmanager
def app_connections(
    server: PgServer, dbname: str, application: str, n: int, *, in_transaction: int = 0
) -> Iterator[list[psycopg.Connection[Any]]]:
    """``n`` idle connections as ``application``; the first ``in_transaction`` stay in one."""
    with ExitStack() as stack:
        conns = []
        for i in range(n):
            conn = stack.enter_context(
                psycopg.connect(
                    server.dsn(dbname), application_name=application, autocommit=i >= in_transaction
                )
            )
            conn.execute("SELECT 1")
            conns.append(conn)
        yield conns


def test_application_and_server_ratios(pg18: PgServer, workdir: Path) -> None:
    pg18.create_database("mon_app")
    config = make_config(
        workdir,
        [
            {
                "name": "app",
                "dsn": pg18.dsn("mon_app"),
                "pools": [
                    {"application": "api", "pool_size": 2, "max_overflow": 1, "processes": 2}
                ],
            }
        ],
    )
    clock = FakeClock()
    sampler = Sampler(monotonic=clock)
    try:
        with app_connections(pg18, "mon_app", "api", 4, in_transaction=2):
            time.sleep(0.3)
            snap = sampler.cycle(config)
        status = snap.server("app")
        assert status is not None
        assert status.up
        assert status.error is None
        s = status.sample
        assert s is not None
        # the fixture's server: max_connections=100, superuser_reserved_connections=3, reserved 0
        assert s.max_connections == 100
        assert s.usable == 97
        assert s.by_application["app"]["api"] == 4
        assert s.by_application["app"]["pgwarden-monitor"] == 1  # the budget: one connection
        assert s.by_database["mon_app"] >= 5
        assert s.total >= 5
        assert s.saturation == s.total / 97
        assert sum(s.by_state.values()) == s.total
        assert s.by_state["idle_in_transaction"] >= 2
        assert s.oldest_idle_in_xact_s >= 0.25
        assert s.oldest_xact_s >= s.oldest_idle_in_xact_s
        assert s.hidden == 0

        pool = snap.app_pool("app", "api")
        assert pool is not None
        assert (pool.connections, pool.capacity, pool.database) == (4, 6, "mon_app")
        assert pool.saturation == 4 / 6
        assert pool.at_limit_s == 0

        # at the limit: 6 of 6; the clock of "at limit since" starts at the first sample
        with app_connections(pg18, "mon_app", "api", 6):
            first = sampler.cycle(config).app_pool("app", "api")
            clock.now += 45
            second = sampler.cycle(config).app_pool("app", "api")
        assert first is not None
        assert second is not None
        assert (first.saturation, first.at_limit_s) == (1.0, 0.0)
        assert (second.saturation, second.at_limit_s) == (1.0, 45.0)
        # a closed client's backend exits a moment later: sample until it is gone
        deadline = time.monotonic() + 15
        below = sampler.cycle(config).app_pool("app", "api")
        while below is not None and below.connections and time.monotonic() < deadline:
            time.sleep(0.1)
            below = sampler.cycle(config).app_pool("app", "api")
        assert below is not None
        assert below.connections == 0
        assert below.at_limit_s == 0.0

        # the same numbers through the collector, with a fresh registry
        with app_connections(pg18, "mon_app", "api", 3):
            snap = sampler.cycle(config)
        registry = CollectorRegistry()
        store = SnapshotStore()
        registry.register(MonitorCollector(store))
        store.publish(snap)
        labels = {"target": "app", "application": "api"}
        assert registry.get_sample_value("pgwarden_application_connections", labels) == 3
        assert registry.get_sample_value("pgwarden_application_pool_capacity", labels) == 6
        assert (
            registry.get_sample_value("pgwarden_application_pool_saturation_ratio", labels) == 0.5
        )
        assert registry.get_sample_value("pgwarden_server_up", {"target": "app"}) == 1
        assert (
            registry.get_sample_value("pgwarden_server_connections_usable", {"target": "app"}) == 97
        )
        ratio = registry.get_sample_value(
            "pgwarden_server_connection_saturation_ratio", {"target": "app"}
        )
        assert ratio is not None
        assert 4 / 97 <= ratio < 1
        assert registry.get_sample_value("pgwarden_own_pool_checked_out", {"target": "app"}) == 0
        assert registry.get_sample_value("pgwarden_own_pool_connections", {"target": "app"}) == 1
        assert (
            registry.get_sample_value("pgwarden_monitor_sample_errors_total", {"target": "app"})
            == 0
        )
    finally:
        sampler.close()
        pg18.drop_database("mon_app")


def test_lock_waits_and_oldest_transaction(pg18: PgServer, workdir: Path) -> None:
    pg18.create_database("mon_locks")
    pg18.execute("CREATE TABLE t (id int)", "mon_locks")
    config = make_config(workdir, [{"name": "locks", "dsn": pg18.dsn("mon_locks")}])
    sampler = Sampler()
    holder = psycopg.connect(pg18.dsn("mon_locks"))
    waiter_done = threading.Event()

    def wait_for_lock() -> None:
        with psycopg.connect(pg18.dsn("mon_locks"), autocommit=True) as conn:
            conn.execute("SELECT count(*) FROM t")
        waiter_done.set()

    try:
        holder.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        waiter = threading.Thread(target=wait_for_lock)
        waiter.start()
        deadline = time.monotonic() + 10
        sample = None
        while time.monotonic() < deadline:
            status = sampler.cycle(config).server("locks")
            assert status is not None
            assert status.sample is not None
            sample = status.sample
            if sample.lock_waiting >= 1:
                break
            time.sleep(0.1)
        assert sample is not None
        assert sample.lock_waiting >= 1
        assert sample.oldest_xact_s > 0
        holder.rollback()
        waiter.join(10)
        assert waiter_done.is_set()
    finally:
        holder.close()
        sampler.close()
        pg18.drop_database("mon_locks")


def test_targets_on_one_server_are_sampled_once(pg18: PgServer, workdir: Path) -> None:
    pg18.create_database("mon_a")
    pg18.create_database("mon_b")
    config = make_config(
        workdir,
        [
            {"name": "a", "dsn": pg18.dsn("mon_a"), "pools": [{"application": "web"}]},
            {"name": "b", "dsn": pg18.dsn("mon_b"), "pools": [{"application": "web"}]},
        ],
    )
    plans = plan_servers(config.targets)
    assert [(p.name, [t.name for t in p.targets]) for p in plans] == [("a", ["a", "b"])]
    assert plans[0].key == ServerKey("127.0.0.1", str(pg18.port), "postgres")
    sampler = Sampler()
    try:
        with app_connections(pg18, "mon_b", "web", 2):
            snap = sampler.cycle(config)
        assert [s.name for s in snap.servers] == ["a"]
        assert snap.servers[0].targets == ("a", "b")
        a, b = snap.app_pool("a", "web"), snap.app_pool("b", "web")
        assert a is not None
        assert b is not None
        assert (a.connections, b.connections) == (0, 2)  # pools are per target database
        assert (a.capacity, b.capacity) == (15, 15)  # the strategy's 5 + 10
        status = snap.server("a")
        assert status is not None
        assert status.sample is not None
        apps = status.sample.by_application
        assert apps["a"]["pgwarden-monitor"] == 1  # one connection (to a's database), not two
        assert apps["b"] == {"web": 2, OTHER: 0}
    finally:
        sampler.close()
        pg18.drop_database("mon_a")
        pg18.drop_database("mon_b")


def test_application_labels_are_bounded(pg18: PgServer, workdir: Path) -> None:
    pg18.create_database("mon_many")
    config = make_config(
        workdir,
        [{"name": "many", "dsn": pg18.dsn("mon_many"), "pools": [{"application": "api"}]}],
        top_applications=1,
    )
    sampler = Sampler()
    try:
        with ExitStack() as stack:
            for i in range(6):
                stack.enter_context(app_connections(pg18, "mon_many", f"job-{i}", 1))
            stack.enter_context(app_connections(pg18, "mon_many", "big", 3))
            stack.enter_context(app_connections(pg18, "mon_many", "", 1))
            status = sampler.cycle(config).server("many")
        assert status is not None
        assert status.sample is not None
        apps = status.sample.by_application["many"]
        assert set(apps) == {"api", "big", OTHER}  # configured + top 1 + other
        assert apps["api"] == 0
        assert apps["big"] == 3
        assert apps[OTHER] >= 7  # six jobs, one without a name, pgwarden-monitor...
        assert sum(apps.values()) == status.sample.by_database["mon_many"]
    finally:
        sampler.close()
        pg18.drop_database("mon_many")


def test_bound_labels() -> None:
    counts = {"a": 5, "b": 5, "c": 1, UNSET: 2}
    assert bound_labels(counts, ["x"], 2) == {"x": 0, "a": 5, "b": 5, OTHER: 3}
    assert bound_labels(counts, ["c"], 0) == {"c": 1, OTHER: 12}
    assert bound_labels({}, [], 3) == {OTHER: 0}


def test_role_without_pg_monitor_still_counts_sessions(pg18: PgServer, workdir: Path) -> None:
    pg18.create_database("mon_hidden")
    pg18.execute("DROP ROLE IF EXISTS mon_plain; CREATE ROLE mon_plain LOGIN")
    config = make_config(
        workdir,
        [
            {
                "name": "plain",
                "dsn": pg18.dsn("mon_hidden", user="mon_plain"),
                "pools": [{"application": "api"}],
            }
        ],
    )
    sampler = Sampler()
    try:
        with app_connections(pg18, "mon_hidden", "api", 2), capture_logs() as logs:
            first = sampler.cycle(config)
            sampler.cycle(config)
        status = first.server("plain")
        assert status is not None
        assert status.sample is not None
        assert status.sample.hidden >= 2  # postgres' sessions, seen without their state
        assert status.sample.by_state["unknown"] >= 2
        pool = first.app_pool("plain", "api")
        assert pool is not None
        assert pool.connections == 2  # application_name stays visible
        warnings = [e for e in logs if "pg_monitor" in e["event"]]
        assert len(warnings) == 1  # once, not per cycle
        results = database_checks(config, config.targets[0], samples=1)
        role = next(r for r in results if r.check == "monitoring.role")
        assert role.status == "warn"
        assert "GRANT pg_monitor TO mon_plain" in role.detail
        pg18.execute("GRANT pg_monitor TO mon_plain")
        results = database_checks(config, config.targets[0], samples=1)
        role = next(r for r in results if r.check == "monitoring.role")
        assert role.status == "pass"
    finally:
        sampler.close()
        pg18.drop_database("mon_hidden")
        pg18.execute("DROP ROLE IF EXISTS mon_plain")


def test_monitoring_queries_run_under_the_statement_timeout(pg18: PgServer, workdir: Path) -> None:
    config = make_config(workdir, [{"name": "st", "dsn": pg18.dsn()}], statement_timeout=0.5)
    engines = EngineCache()
    plan = plan_servers(config.targets)[0]
    try:
        with engines.connect(plan, config.monitor) as conn:
            assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "500ms"
            assert conn.exec_driver_sql("SHOW application_name").scalar() == "pgwarden-monitor"
            started = time.monotonic()
            with pytest.raises(sqlalchemy.exc.OperationalError, match="statement timeout"):
                conn.exec_driver_sql("SELECT pg_sleep(5)")
            assert time.monotonic() - started < 2
    finally:
        engines.close()


def test_own_pool_timeouts_are_counted(pg18: PgServer, workdir: Path) -> None:
    config = make_config(
        workdir,
        [{"name": "own", "dsn": pg18.dsn()}],
        pool={"pool_size": 1, "max_overflow": 0, "pool_timeout": 0.1},
    )
    sampler = Sampler()
    plan = plan_servers(config.targets)[0]
    try:
        # a connection that is never given back (a leak) exhausts the one-connection pool
        with sampler.engines.connect(plan, config.monitor):
            snap = sampler.cycle(config)
        status = snap.server("own")
        assert status is not None
        assert not status.up
        assert status.own_pool is not None
        assert (status.own_pool.timeouts, status.own_pool.checked_out) == (1, 1)
        assert snap.server_errors["own"] == 1
        after = sampler.cycle(config).server("own")
        assert after is not None
        assert after.up
        assert after.own_pool is not None
        assert (after.own_pool.timeouts, after.own_pool.checked_out) == (1, 0)
    finally:
        sampler.close()
