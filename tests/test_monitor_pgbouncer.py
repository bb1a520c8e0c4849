"""PgBouncer pools through a real PgBouncer 1.18 in front of the real PostgreSQL 18."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry

from pgwarden.config import Config, parse
from pgwarden.monitor.pgbouncer import BouncerPool, parse_pool_sizes, parse_pools
from pgwarden.monitor.sampler import Sampler
from pgwarden.monitor.snapshot import MonitorCollector, Snapshot, SnapshotStore
from tests.pgbouncer import PgBouncer, PgBouncerFactory
from tests.pgservers import PgServer


def bouncer_config(workdir: Path, bouncer: PgBouncer) -> Config:
    return parse(
        {
            "daemon": {"state_dir": str(workdir / "state")},
            "storage": {"path": str(workdir / "backups")},
            "pgbouncer": [{"name": "main", "dsn": bouncer.admin_dsn()}],
        },
        workdir / "pgwarden.toml",
    )


def pool_of(snap: Snapshot, database: str) -> BouncerPool:
    status = snap.bouncer("main")
    assert status is not None
    assert status.up, status.error
    assert status.sample is not None
    return next(p for p in status.sample.pools if p.database == database)


def registry_for(snap: Snapshot) -> CollectorRegistry:
    registry = CollectorRegistry()
    store = SnapshotStore()
    registry.register(MonitorCollector(store))
    store.publish(snap)
    return registry


def test_saturated_pool_shows_waiting_clients(
    pg18: PgServer, pgbouncer_factory: PgBouncerFactory, workdir: Path
) -> None:
    pg18.create_database("mon_bouncer")
    bouncer = pgbouncer_factory(pool_mode="transaction", default_pool_size=2)
    config = bouncer_config(workdir, bouncer)
    sampler = Sampler()
    clients = [
        psycopg.connect(bouncer.dsn("mon_bouncer"), autocommit=True, prepare_threshold=None)
        for _ in range(5)
    ]
    errors: list[BaseException] = []

    def hold(conn: psycopg.Connection[Any]) -> None:
        try:
            with conn.transaction():
                conn.execute("SELECT pg_sleep(2.5)")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=hold, args=(c,)) for c in clients]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while True:
            snap = sampler.cycle(config)
            pool = pool_of(snap, "mon_bouncer")
            if pool.clients.get("waiting", 0) >= 3 and pool.max_wait_s >= 0.3:
                break
            assert time.monotonic() < deadline, pool
            time.sleep(0.1)
        assert pool.user == "postgres"
        assert pool.clients["active"] == 2
        assert pool.clients["waiting"] == 3
        assert pool.servers["active"] == 2
        assert pool.servers_in_use == 2
        assert pool.pool_size == 2
        assert pool.saturation == 1.0
        assert pool.max_wait_s >= 0.3

        registry = registry_for(snap)
        key = {"pgbouncer": "main", "database": "mon_bouncer", "user": "postgres"}
        assert registry.get_sample_value("pgwarden_pgbouncer_up", {"pgbouncer": "main"}) == 1
        assert registry.get_sample_value("pgwarden_pgbouncer_pool_saturation_ratio", key) == 1.0
        assert (
            registry.get_sample_value("pgwarden_pgbouncer_clients", {**key, "state": "waiting"})
            == 3
        )
        assert (
            registry.get_sample_value("pgwarden_pgbouncer_clients", {**key, "state": "active"}) == 2
        )
        assert (
            registry.get_sample_value("pgwarden_pgbouncer_servers", {**key, "state": "active"}) == 2
        )
        wait = registry.get_sample_value("pgwarden_pgbouncer_max_wait_seconds", key)
        assert wait is not None
        assert wait >= 0.3
        assert (
            registry.get_sample_value(
                "pgwarden_pgbouncer_pool_size", {"pgbouncer": "main", "database": "mon_bouncer"}
            )
            == 2
        )
        # the admin console (where pgwarden itself sits) is left out
        assert (
            registry.get_sample_value(
                "pgwarden_pgbouncer_pool_size", {"pgbouncer": "main", "database": "pgbouncer"}
            )
            is None
        )

        for t in threads:
            t.join(15)
        assert not errors
        snap = sampler.cycle(config)
        pool = pool_of(snap, "mon_bouncer")
        assert pool.clients.get("waiting") == 0
        assert pool.saturation == 0.0
        stats = snap.bouncer("main")
        assert stats is not None
        assert stats.sample is not None
        db_stats = next(s for s in stats.sample.stats if s.database == "mon_bouncer")
        assert db_stats.transactions >= 5
        assert db_stats.wait_s > 0  # three clients waited for a server

        # pool_size = 0: no saturation ratio at all, so no alert can fire on it
        bouncer.reconfigure(default_pool_size=0)
        snap = sampler.cycle(config)
        pool = pool_of(snap, "mon_bouncer")
        assert pool.pool_size == 0
        assert pool.saturation is None
        registry = registry_for(snap)
        assert registry.get_sample_value("pgwarden_pgbouncer_pool_saturation_ratio", key) is None
        assert (
            registry.get_sample_value(
                "pgwarden_pgbouncer_pool_size", {"pgbouncer": "main", "database": "mon_bouncer"}
            )
            == 0
        )
    finally:
        for t in threads:
            t.join(15)
        for c in clients:
            c.close()
        sampler.close()
        pg18.drop_database("mon_bouncer")


def test_pgbouncer_down_and_back(
    pg18: PgServer, pgbouncer_factory: PgBouncerFactory, workdir: Path
) -> None:
    bouncer = pgbouncer_factory()
    config = bouncer_config(workdir, bouncer)
    sampler = Sampler()
    try:
        first = sampler.cycle(config).bouncer("main")
        assert first is not None
        assert first.up
        bouncer.stop()
        down = sampler.cycle(config)
        status = down.bouncer("main")
        assert status is not None
        assert not status.up
        assert status.error
        assert down.bouncer_errors["main"] == 1
        assert (
            registry_for(down).get_sample_value("pgwarden_pgbouncer_up", {"pgbouncer": "main"}) == 0
        )
        bouncer.start()
        back = sampler.cycle(config).bouncer("main")
        assert back is not None
        assert back.up
    finally:
        sampler.close()


def test_parsing_is_by_column_name_and_tolerates_new_columns() -> None:
    sizes = parse_pool_sizes(
        [
            {"name": "app", "pool_size": 20, "some_future_column": "x"},
            {"name": "unlimited", "pool_size": 0},
            {"name": "pgbouncer", "pool_size": 2},
        ]
    )
    assert sizes == {"app": 20, "unlimited": 0}
    pools = parse_pools(
        [
            {
                "user": "u",
                "database": "app",
                "sv_active": 5,
                "cl_waiting": 1,
                "cl_active": 5,
                "maxwait": 2,
                "maxwait_us": 500000,
                "sv_new_state": 1,
                "load_balance": "x",
            },
            {"database": "unlimited", "user": "u", "sv_active": 7},
            {"database": "pgbouncer", "user": "pgbouncer", "cl_active": 1},
        ],
        sizes,
    )
    assert [p.database for p in pools] == ["app", "unlimited"]
    app, unlimited = pools
    assert app.max_wait_s == 2.5
    assert app.servers == {"active": 5, "new_state": 1}
    assert app.saturation == 0.25
    assert unlimited.saturation is None
