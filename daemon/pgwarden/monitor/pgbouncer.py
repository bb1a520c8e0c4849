"""PgBouncer pools, read from the admin console (``SHOW POOLS``, ``SHOW STATS``,
``SHOW DATABASES``).

The admin console speaks only the simple query protocol: the connection is autocommit, uses
``psycopg.ClientCursor`` (parameters interpolated client-side) and ``prepare_threshold=None``.
It is kept open between samples and reopened after an error.  No ``options`` startup
parameter is sent (PgBouncer refuses unknown ones), so there is no server-side statement
timeout here: the console answers from memory.

Rows are parsed **by column name** and unknown columns are ignored, so newer PgBouncer versions
(which add columns) keep working.  Every ``cl_*`` column of ``SHOW POOLS`` is a client state
(``active``, ``waiting``, ``active_cancel_req``...), every ``sv_*`` column a server state
(``active``, ``idle``, ``used``, ``tested``, ``login``...).  The admin database ``pgbouncer``
itself (where pgwarden's own console connection sits) is left out.

Per pool (database, user):

* clients active and waiting, and the longest wait, ``maxwait + maxwait_us / 1e6`` seconds;
* servers by state; *in use* = ``sv_active`` (plus the ``sv_active_cancel`` /
  ``sv_being_canceled`` columns where they exist): server connections linked to a client;
* saturation = in use / the database's ``pool_size`` from ``SHOW DATABASES``.  A pool size of
  0 has no meaningful ratio: no saturation is reported for it (so no alert can fire on it).
  Per-user pool sizes (PgBouncer 1.23+ ``[users] pool_size``) are not taken into account.

Per database, from ``SHOW STATS``: transactions, queries and the total client wait time, as
counters (they restart from zero when PgBouncer restarts, which Prometheus handles).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, LiteralString

import psycopg

from pgwarden.config import PgBouncerConfig
from pgwarden.pg.conninfo import ConnSpec

ADMIN_DATABASE = "pgbouncer"
APPLICATION_NAME = "pgwarden-monitor"
_IN_USE = ("active", "active_cancel", "being_canceled")

Row = dict[str, Any]
#: the only statements sent to the console (fixed text: no input ever reaches a query)
_SHOW: Mapping[str, LiteralString] = {
    "POOLS": "SHOW POOLS",
    "STATS": "SHOW STATS",
    "DATABASES": "SHOW DATABASES",
}


@dataclass(frozen=True)
class BouncerPool:
    """One PgBouncer pool (a database and user pair)."""

    database: str
    user: str
    clients: Mapping[str, int]
    servers: Mapping[str, int]
    max_wait_s: float
    pool_size: int | None  # None: the database is not in SHOW DATABASES

    @property
    def servers_in_use(self) -> int:
        return sum(self.servers.get(state, 0) for state in _IN_USE)

    @property
    def saturation(self) -> float | None:
        """In-use servers / pool size; ``None`` when the size is 0 (unlimited) or unknown."""
        if not self.pool_size:
            return None
        return self.servers_in_use / self.pool_size


@dataclass(frozen=True)
class BouncerDatabaseStats:
    """Cumulative counters of one database (``SHOW STATS``)."""

    database: str
    transactions: int
    queries: int
    wait_s: float


@dataclass(frozen=True)
class BouncerSample:
    """One sample of one PgBouncer."""

    name: str
    pools: tuple[BouncerPool, ...]
    pool_sizes: Mapping[str, int] = field(default_factory=dict)
    stats: tuple[BouncerDatabaseStats, ...] = ()
    databases: tuple[Row, ...] = ()


def _number(value: Any) -> float:
    if value is None or value == "":
        return 0.0
    if isinstance(value, int | float | Decimal):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        return 0.0


def show(conn: psycopg.Connection[Any], what: str) -> list[Row]:
    """``SHOW <what>`` as ``{column name: value}`` rows (``what``: POOLS, STATS, DATABASES)."""
    query = _SHOW.get(what)
    if query is None:
        raise ValueError(f"not a SHOW command pgwarden uses: {what!r}")
    with conn.cursor() as cur:
        cur.execute(query)
        names = [column.name for column in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def parse_pools(rows: list[Row], pool_sizes: Mapping[str, int]) -> tuple[BouncerPool, ...]:
    """``SHOW POOLS`` rows -> pools (the admin database excluded)."""
    pools = []
    for row in rows:
        database = str(row.get("database") or "")
        if database == ADMIN_DATABASE:
            continue
        clients = {k[3:]: int(_number(v)) for k, v in row.items() if k.startswith("cl_")}
        servers = {k[3:]: int(_number(v)) for k, v in row.items() if k.startswith("sv_")}
        wait = _number(row.get("maxwait")) + _number(row.get("maxwait_us")) / 1e6
        pools.append(
            BouncerPool(
                database=database,
                user=str(row.get("user") or ""),
                clients=clients,
                servers=servers,
                max_wait_s=wait,
                pool_size=pool_sizes.get(database),
            )
        )
    return tuple(pools)


def parse_pool_sizes(rows: list[Row]) -> dict[str, int]:
    """``SHOW DATABASES`` rows -> {database name: pool_size} (the admin database excluded)."""
    sizes = {}
    for row in rows:
        name = str(row.get("name") or "")
        if name and name != ADMIN_DATABASE and row.get("pool_size") is not None:
            sizes[name] = max(int(_number(row["pool_size"])), 0)
    return sizes


def parse_stats(rows: list[Row]) -> tuple[BouncerDatabaseStats, ...]:
    """``SHOW STATS`` rows -> cumulative counters (times there are in microseconds)."""
    return tuple(
        BouncerDatabaseStats(
            database=str(row.get("database") or ""),
            transactions=int(_number(row.get("total_xact_count"))),
            queries=int(_number(row.get("total_query_count"))),
            wait_s=_number(row.get("total_wait_time")) / 1e6,
        )
        for row in rows
        if row.get("database") and row.get("database") != ADMIN_DATABASE
    )


def read_bouncer(conn: psycopg.Connection[Any], name: str) -> BouncerSample:
    """One :class:`BouncerSample` from an open admin-console connection."""
    databases = show(conn, "DATABASES")
    sizes = parse_pool_sizes(databases)
    pools = parse_pools(show(conn, "POOLS"), sizes)
    stats = parse_stats(show(conn, "STATS"))
    return BouncerSample(
        name=name, pools=pools, pool_sizes=sizes, stats=stats, databases=tuple(databases)
    )


def connect_admin(bouncer: PgBouncerConfig) -> psycopg.Connection[Any]:
    """A connection to the admin console: autocommit, simple query protocol."""
    spec = ConnSpec.from_dsn(bouncer.dsn, bouncer.credentials, what=f"pgbouncer[{bouncer.name}]")
    return spec.connect(
        autocommit=True,
        prepare_threshold=None,
        cursor_factory=psycopg.ClientCursor,
        application_name=APPLICATION_NAME,
    )


class BouncerClients:
    """Admin connections kept open between samples, one per PgBouncer; one thread uses it."""

    def __init__(self) -> None:
        self._conns: dict[str, tuple[PgBouncerConfig, psycopg.Connection[Any]]] = {}

    def sample(self, bouncer: PgBouncerConfig) -> BouncerSample:
        """Sample ``bouncer``; on any error the connection is dropped and the error raised."""
        held = self._conns.get(bouncer.name)
        if held is not None and (held[0] != bouncer or held[1].closed):
            self._drop(bouncer.name)
            held = None
        if held is None:
            held = (bouncer, connect_admin(bouncer))
            self._conns[bouncer.name] = held
        try:
            return read_bouncer(held[1], bouncer.name)
        except psycopg.Error:
            self._drop(bouncer.name)
            raise

    def _drop(self, name: str) -> None:
        held = self._conns.pop(name, None)
        if held is not None:
            held[1].close()

    def retain(self, names: set[str]) -> None:
        for name in [n for n in self._conns if n not in names]:
            self._drop(name)

    def close(self) -> None:
        self.retain(set())
