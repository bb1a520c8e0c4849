"""Per-database and per-role CONNECTION LIMIT in the saturation metrics and ``pgwarden check``,
on real PostgreSQL 18 and 15 servers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry
from psycopg import sql

from pgwarden.commands.check_cmd import render
from pgwarden.config import Config, parse
from pgwarden.monitor.connections import Activity, Group
from pgwarden.monitor.connlimits import Limits, judge, limit_checks, summarize_limits
from pgwarden.monitor.dbchecks import database_checks
from pgwarden.monitor.sampler import Sampler
from pgwarden.monitor.snapshot import MonitorCollector, SnapshotStore
from pgwarden.monitor.verdicts import CheckResult
from tests.pgservers import PgServer


def make_config(workdir: Path, targets: list[dict[str, Any]]) -> Config:
    data: dict[str, Any] = {
        "daemon": {"state_dir": str(workdir / "state")},
        "storage": {"path": str(workdir / "backups")},
        "monitor": {"interval": 0.2, "statement_timeout": 5},
        "targets": targets,
    }
    return parse(data, workdir / "pgwarden.toml")


@contextmanager
def limited(server: PgServer, db_limit: int, role_limit: int) -> Iterator[tuple[str, str, str]]:
    """A database with ``db_limit``, a plain database, and a login role with ``role_limit``."""
    tag = uuid.uuid4().hex[:8]
    db, plain, role = f"lim_db_{tag}", f"lim_plain_{tag}", f"lim_role_{tag}"
    server.create_database(db)
    server.create_database(plain)
    with server.connect() as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} CONNECTION LIMIT {}").format(
                sql.Identifier(db), sql.Literal(db_limit)
            )
        )
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN CONNECTION LIMIT {}").format(
                sql.Identifier(role), sql.Literal(role_limit)
            )
        )
    try:
        yield db, plain, role
    finally:
        server.drop_database(db)
        server.drop_database(plain)
        with server.connect() as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def open_connections(
    stack: ExitStack, server: PgServer, dbname: str, n: int, user: str = "postgres"
) -> None:
    for _ in range(n):
        conn = stack.enter_context(psycopg.connect(server.dsn(dbname, user), autocommit=True))
        conn.execute("SELECT 1")


@pytest.mark.parametrize("kind", ["pg18", "pg15"])
def test_limits_in_metrics(kind: str, request: pytest.FixtureRequest, workdir: Path) -> None:
    server: PgServer = request.getfixturevalue(kind)
    with limited(server, 3, 2) as (db, plain, role), ExitStack() as stack:
        # the monitor samples through the plain database, so the limited one holds only ours
        config = make_config(workdir, [{"name": "srv", "dsn": server.dsn(plain)}])
        open_connections(stack, server, db, 3)
        open_connections(stack, server, plain, 2, user=role)
        # the limits are real: the next session of the role is refused
        with pytest.raises(psycopg.OperationalError, match="too many connections for role"):
            psycopg.connect(server.dsn(plain, role)).close()
        store = SnapshotStore()
        registry = CollectorRegistry()
        registry.register(MonitorCollector(store))
        sampler = Sampler()
        try:
            store.publish(sampler.cycle(config))
        finally:
            sampler.close()

        def value(name: str, **labels: str) -> float | None:
            return registry.get_sample_value(name, {"target": "srv", **labels})

        assert value("pgwarden_database_connection_limit", database=db) == 3
        assert value("pgwarden_database_connections_used_ratio", database=db) == 1.0
        assert value("pgwarden_role_connection_limit", role=role) == 2
        assert value("pgwarden_role_connections_used_ratio", role=role) == 1.0
        # a role without a limit but connected: measured against the usable slots
        usable = value("pgwarden_server_connections_usable")
        assert usable is not None and usable > 0
        assert value("pgwarden_role_connection_limit", role="postgres") == usable
        postgres_ratio = value("pgwarden_role_connections_used_ratio", role="postgres")
        assert postgres_ratio is not None and 0 < postgres_ratio < 1
        # a database without a limit is not exported (cardinality stays bounded)
        assert value("pgwarden_database_connection_limit", database=plain) is None
    # the role and database are gone: so are their series
    sampler = Sampler()
    try:
        store.publish(sampler.cycle(make_config(workdir, [{"name": "srv", "dsn": server.dsn()}])))
    finally:
        sampler.close()
    assert (
        registry.get_sample_value("pgwarden_role_connection_limit", {"target": "srv", "role": role})
        is None
    )


def by_key(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.check + (f":{r.subject}" if r.subject else ""): r for r in results}


def test_check_fails_at_the_limits(pg18: PgServer, workdir: Path) -> None:
    with limited(pg18, 3, 2) as (db, plain, role), ExitStack() as stack:
        config = make_config(
            workdir,
            [
                {"name": "limited", "dsn": pg18.dsn(db)},
                {"name": "plain", "dsn": pg18.dsn(plain)},
            ],
        )
        open_connections(stack, pg18, db, 3)
        open_connections(stack, pg18, plain, 2, user=role)
        on_db = by_key(database_checks(config, config.targets[0], samples=1, gap_s=0))
        item = on_db[f"connections.database_limit:{db}"]
        # three of ours and the check's own session (a superuser passes the limit)
        assert item.status == "fail", item
        assert "4 of 3 connections" in item.detail and "CONNECTION LIMIT 3" in item.detail
        assert on_db["connections.role_limit"].status == "pass"

        on_plain = by_key(database_checks(config, config.targets[1], samples=1, gap_s=0))
        assert on_plain[f"connections.database_limit:{plain}"].status == "pass"
        role_item = on_plain[f"connections.role_limit:{role}"]
        assert role_item.status == "fail", role_item
        assert f"2 of 2 connections for role {role}" in role_item.detail
        assert role_item.title == "Connection limit of role"
        report = render(list(on_plain.values()))
        assert f"FAIL  Connection limit of role {role}: 2 of 2 connections" in report, report


def activity(groups: list[Group], max_connections: int = 20) -> Activity:
    return Activity(max_connections, 3, 0, 180000, 0.0, 0.0, 0, 0, tuple(groups))


def test_judge_thresholds_and_effective_limits() -> None:
    groups = [
        Group("idle", "app", "api", "x", 4),
        Group("active", "app", "batch", "y", 1),
        Group("idle", "other", "web", "z", 2),
    ]
    limits = Limits(databases={"app": 10, "big": 500}, roles={"api": 5, "idle_role": 3})
    rows = {(r.kind, r.name): r for r in summarize_limits(activity(groups), limits)}
    # usable = 20 - 3 = 17: a larger declared limit is bounded by it
    assert rows[("database", "big")].limit == 17
    assert rows[("database", "app")].connections == 5
    assert rows[("role", "api")].ratio == 4 / 5
    assert rows[("role", "batch")].declared == -1 and rows[("role", "batch")].limit == 17
    assert rows[("role", "idle_role")].connections == 0  # a limit, no connection: exported
    assert ("database", "other") not in rows  # no limit: not exported
    assert judge(rows[("role", "api")], 17)[0] == "warn"  # 80 %
    assert judge(rows[("database", "app")], 17)[0] == "pass"
    status, detail = judge(rows[("database", "big")], 17)
    assert status == "pass" and "which bind first" in detail
    items = by_key(limit_checks(activity(groups), limits, "app", ["batch"], "t"))
    assert items["connections.role_limit:api"].status == "warn"
    assert "connections.role_limit:idle_role" not in items  # not connecting to app
    assert items["connections.database_limit:app"].status == "pass"
