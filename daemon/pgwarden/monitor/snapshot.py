"""The monitor's last samples as one immutable :class:`Snapshot`, and the Prometheus collector
that exposes it.

The monitor thread builds a new snapshot every cycle and publishes it with one reference swap
(:class:`SnapshotStore`); :class:`MonitorCollector.collect` reads only the snapshot it finds
there, so **a scrape never queries PostgreSQL or PgBouncer** and always sees one consistent
cycle.  A target removed by a reload disappears from the next snapshot, and so do its series.

Labels: ``target`` on the ``pgwarden_server_*`` and ``pgwarden_own_pool_*`` metrics names the
*server*, by the first configured target on it (targets sharing a host, port and user are
sampled once); ``pgwarden_target_server_info{target, server}`` maps every target to that name.
``pgwarden_application_*`` metrics carry the target that owns the pool (its database).
Label values are bounded (see :mod:`pgwarden.monitor.connections`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pgwarden.monitor.connections import AppPoolSample, ServerSample
from pgwarden.monitor.connlimits import ConnLimitSample, limit_families
from pgwarden.monitor.pgbouncer import BouncerSample


@dataclass(frozen=True)
class OwnPool:
    """pgwarden's own monitoring pool for one server, read at the end of a sample."""

    checked_out: int
    overflow: int
    connections: int
    capacity: int
    timeouts: int


@dataclass(frozen=True)
class ServerStatus:
    """The outcome of sampling one server: a sample, or why there is none."""

    name: str
    targets: tuple[str, ...]
    up: bool
    sample: ServerSample | None = None
    own_pool: OwnPool | None = None
    error: str | None = None
    #: databases with a CONNECTION LIMIT, roles with one or with a connection
    limits: tuple[ConnLimitSample, ...] = ()


@dataclass(frozen=True)
class BouncerStatus:
    name: str
    up: bool
    sample: BouncerSample | None = None
    error: str | None = None


@dataclass(frozen=True)
class Snapshot:
    """Everything the collector exports; ``taken_at`` is the Unix time of the cycle's end."""

    taken_at: float | None = None
    servers: tuple[ServerStatus, ...] = ()
    app_pools: tuple[AppPoolSample, ...] = ()
    bouncers: tuple[BouncerStatus, ...] = ()
    server_errors: Mapping[str, int] = field(default_factory=dict)
    bouncer_errors: Mapping[str, int] = field(default_factory=dict)

    def server(self, name: str) -> ServerStatus | None:
        return next((s for s in self.servers if s.name == name), None)

    def bouncer(self, name: str) -> BouncerStatus | None:
        return next((b for b in self.bouncers if b.name == name), None)

    def app_pool(self, target: str, application: str) -> AppPoolSample | None:
        return next(
            (p for p in self.app_pools if p.target == target and p.application == application),
            None,
        )


class SnapshotStore:
    """The current snapshot; ``publish`` swaps one reference, readers never block."""

    def __init__(self) -> None:
        self._current = Snapshot()
        self._published = threading.Condition()

    def current(self) -> Snapshot:
        return self._current

    def publish(self, snapshot: Snapshot) -> None:
        with self._published:
            self._current = snapshot
            self._published.notify_all()

    def wait_for(self, after: float | None, timeout: float) -> Snapshot:
        """Wait until a snapshot newer than ``after`` is published (for tests and tools)."""
        with self._published:
            self._published.wait_for(
                lambda: (
                    self._current.taken_at is not None
                    and (after is None or self._current.taken_at > after)
                ),
                timeout,
            )
            return self._current


def _gauge(name: str, doc: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


def _counter(name: str, doc: str, labels: Iterable[str] = ()) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=list(labels))


def _server_families(snap: Snapshot) -> Iterator[Metric]:
    up = _gauge("pgwarden_server_up", "1 if the last sample of the server succeeded", ["target"])
    info = _gauge(
        "pgwarden_target_server_info",
        "Maps each target to the server label (first target on the same server)",
        ["target", "server"],
    )
    conns = _gauge("pgwarden_server_connections", "Client backends by state", ["target", "state"])
    by_db = _gauge(
        "pgwarden_server_database_connections",
        "Client backends by database (configured ones, the top N, the rest as other)",
        ["target", "database"],
    )
    by_user = _gauge(
        "pgwarden_server_user_connections",
        "Client backends by user (configured ones, the top N, the rest as other)",
        ["target", "user"],
    )
    usable = _gauge(
        "pgwarden_server_connections_usable",
        "max_connections minus superuser_reserved_connections and reserved_connections",
        ["target"],
    )
    max_conn = _gauge("pgwarden_server_max_connections", "max_connections", ["target"])
    ratio = _gauge(
        "pgwarden_server_connection_saturation_ratio",
        "Client backends / usable connections (superusers can pass 1)",
        ["target"],
    )
    oldest = _gauge(
        "pgwarden_server_oldest_transaction_seconds",
        "Age of the oldest open transaction of a client backend (0 if none)",
        ["target"],
    )
    idle_tx = _gauge(
        "pgwarden_server_idle_in_transaction_oldest_seconds",
        "Time the longest idle-in-transaction session has been idle (0 if none)",
        ["target"],
    )
    locks = _gauge(
        "pgwarden_server_lock_waiting_backends", "Client backends waiting on a lock", ["target"]
    )
    hidden = _gauge(
        "pgwarden_server_hidden_backends",
        "Sessions whose details the monitoring role cannot see (grant pg_monitor)",
        ["target"],
    )
    for status in snap.servers:
        up.add_metric([status.name], 1.0 if status.up else 0.0)
        for target in status.targets:
            info.add_metric([target, status.name], 1.0)
        s = status.sample
        if s is None:
            continue
        for state, n in s.by_state.items():
            conns.add_metric([status.name, state], n)
        for database, n in s.by_database.items():
            by_db.add_metric([status.name, database], n)
        for user, n in s.by_user.items():
            by_user.add_metric([status.name, user], n)
        usable.add_metric([status.name], s.usable)
        max_conn.add_metric([status.name], s.max_connections)
        ratio.add_metric([status.name], s.saturation)
        oldest.add_metric([status.name], s.oldest_xact_s)
        idle_tx.add_metric([status.name], s.oldest_idle_in_xact_s)
        locks.add_metric([status.name], s.lock_waiting)
        hidden.add_metric([status.name], s.hidden)
    yield from (up, info, conns, by_db, by_user, usable, max_conn, ratio, oldest, idle_tx)
    yield from (locks, hidden)


def _application_families(snap: Snapshot) -> Iterator[Metric]:
    labels = ["target", "application"]
    conns = _gauge(
        "pgwarden_application_connections",
        "Connections to the target's database by application_name (its pools, the top N, other)",
        labels,
    )
    capacity = _gauge(
        "pgwarden_application_pool_capacity",
        "processes x (pool_size + max_overflow) of a configured application pool",
        labels,
    )
    ratio = _gauge(
        "pgwarden_application_pool_saturation_ratio",
        "Connections held by a configured application / its pool capacity",
        labels,
    )
    at_limit = _gauge(
        "pgwarden_application_pool_at_limit_seconds",
        "How long a configured application pool has been at 100% or more (0 if below)",
        labels,
    )
    for status in snap.servers:
        if status.sample is not None:
            for target, apps in status.sample.by_application.items():
                for app, n in apps.items():
                    conns.add_metric([target, app], n)
    for pool in snap.app_pools:
        capacity.add_metric([pool.target, pool.application], pool.capacity)
        ratio.add_metric([pool.target, pool.application], pool.saturation)
        at_limit.add_metric([pool.target, pool.application], pool.at_limit_s)
    yield from (conns, capacity, ratio, at_limit)


def _own_pool_families(snap: Snapshot) -> Iterator[Metric]:
    checked_out = _gauge(
        "pgwarden_own_pool_checked_out",
        "pgwarden monitoring connections checked out at the end of a sample (0 unless leaked)",
        ["target"],
    )
    overflow = _gauge(
        "pgwarden_own_pool_overflow",
        "pgwarden monitoring pool connections beyond pool_size",
        ["target"],
    )
    opened = _gauge(
        "pgwarden_own_pool_connections",
        "Connections pgwarden's monitoring pool holds open to the server",
        ["target"],
    )
    timeouts = _counter(
        "pgwarden_own_pool_timeouts",
        "Checkouts from pgwarden's monitoring pool that timed out",
        ["target"],
    )
    for status in snap.servers:
        own = status.own_pool
        if own is None:
            continue
        checked_out.add_metric([status.name], own.checked_out)
        overflow.add_metric([status.name], own.overflow)
        opened.add_metric([status.name], own.connections)
        timeouts.add_metric([status.name], own.timeouts)
    yield from (checked_out, overflow, opened, timeouts)


def _bouncer_families(snap: Snapshot) -> Iterator[Metric]:
    pool_labels = ["pgbouncer", "database", "user"]
    up = _gauge("pgwarden_pgbouncer_up", "1 if the last PgBouncer sample succeeded", ["pgbouncer"])
    clients = _gauge(
        "pgwarden_pgbouncer_clients", "Client connections by state", [*pool_labels, "state"]
    )
    servers = _gauge(
        "pgwarden_pgbouncer_servers", "Server connections by state", [*pool_labels, "state"]
    )
    wait = _gauge(
        "pgwarden_pgbouncer_max_wait_seconds",
        "Longest time a waiting client has waited for a server connection",
        pool_labels,
    )
    size = _gauge(
        "pgwarden_pgbouncer_pool_size",
        "pool_size of the database (0 means not limited by PgBouncer)",
        ["pgbouncer", "database"],
    )
    ratio = _gauge(
        "pgwarden_pgbouncer_pool_saturation_ratio",
        "Server connections in use / pool_size (absent when pool_size is 0)",
        pool_labels,
    )
    db_labels = ["pgbouncer", "database"]
    xacts = _counter("pgwarden_pgbouncer_transactions", "Transactions pooled", db_labels)
    queries = _counter("pgwarden_pgbouncer_queries", "Queries pooled", db_labels)
    waited = _counter(
        "pgwarden_pgbouncer_client_wait_seconds",
        "Total time clients waited for a server connection",
        db_labels,
    )
    for status in snap.bouncers:
        up.add_metric([status.name], 1.0 if status.up else 0.0)
        s = status.sample
        if s is None:
            continue
        for database, n in s.pool_sizes.items():
            size.add_metric([s.name, database], n)
        for pool in s.pools:
            key = [s.name, pool.database, pool.user]
            for state, n in pool.clients.items():
                clients.add_metric([*key, state], n)
            for state, n in pool.servers.items():
                servers.add_metric([*key, state], n)
            wait.add_metric(key, pool.max_wait_s)
            if pool.saturation is not None:
                ratio.add_metric(key, pool.saturation)
        for stats in s.stats:
            xacts.add_metric([s.name, stats.database], stats.transactions)
            queries.add_metric([s.name, stats.database], stats.queries)
            waited.add_metric([s.name, stats.database], stats.wait_s)
    yield from (up, clients, servers, wait, size, ratio, xacts, queries, waited)


def _monitor_families(snap: Snapshot) -> Iterator[Metric]:
    last = _gauge(
        "pgwarden_monitor_last_sample_timestamp_seconds",
        "When the monitor last completed a sampling cycle (Unix time)",
    )
    if snap.taken_at is not None:
        last.add_metric([], snap.taken_at)
    errors = _counter("pgwarden_monitor_sample_errors", "Failed samples of a server", ["target"])
    for name, n in snap.server_errors.items():
        errors.add_metric([name], n)
    bouncer_errors = _counter(
        "pgwarden_pgbouncer_sample_errors", "Failed samples of a PgBouncer", ["pgbouncer"]
    )
    for name, n in snap.bouncer_errors.items():
        bouncer_errors.add_metric([name], n)
    yield from (last, errors, bouncer_errors)


def families(snap: Snapshot) -> list[Metric]:
    """Every metric family of ``snap`` (what a scrape returns)."""
    return [
        *_server_families(snap),
        *limit_families((s.name, s.limits) for s in snap.servers),
        *_application_families(snap),
        *_own_pool_families(snap),
        *_bouncer_families(snap),
        *_monitor_families(snap),
    ]


class MonitorCollector(Collector):
    """Registered on ``metrics.registry``; reads only the published snapshot."""

    def __init__(self, store: SnapshotStore) -> None:
        self._store = store

    def describe(self) -> Iterable[Metric]:
        return families(Snapshot())

    def collect(self) -> Iterable[Metric]:
        return families(self._store.current())

    def cache_token(self) -> object:
        """The snapshot :meth:`collect` reads: while it is the same object, so is the text
        (:mod:`pgwarden.metrics.exposition` writes it once per snapshot)."""
        return self._store.current()
