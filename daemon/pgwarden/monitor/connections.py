"""Connection saturation of one PostgreSQL server: one sample, read through one connection.

This module owns *what* is read from ``pg_stat_activity`` and how it is summarised:

* :func:`read_activity` runs two queries in one transaction (so both see the same statistics
  snapshot) and returns the raw :class:`Activity`: the connection limits, client backends
  grouped by state, database, user and application, the oldest transaction and
  idle-in-transaction ages, and how many backends wait on a lock.
* :func:`summarize` turns it into a :class:`ServerSample` with bounded labels -- the
  configured databases and users plus the ``top_applications`` largest others, the rest summed
  as ``other``; per target, its database's applications: its pools, the top N, ``other`` --
  and the saturation ratio against the *usable* limit:
  ``max_connections - superuser_reserved_connections - reserved_connections`` (the last one
  exists from PostgreSQL 16).  Superusers may use the reserved slots, so the ratio can pass 1.
* :func:`application_pools` compares, for each ``[[targets.pools]]``, the connections held under
  that ``application_name`` in the target's database with the pool's capacity
  (``processes x (pool_size + max_overflow)``), and :class:`AtLimitTracker` remembers since
  when a pool has been at 100 % or more.

Only *client backends* count: background workers, autovacuum workers and WAL senders have
their own slots.  A role without ``pg_monitor`` (or ``pg_read_all_stats``) sees other roles'
sessions without their ``backend_type`` and ``state``: those sessions are counted in state
``unknown`` (when they belong to a database) and :attr:`Activity.hidden` says how many there
were, so that the checklist can ask for ``GRANT pg_monitor``.

Applications are recognised by ``application_name`` only: an application that does not set it
(``?application_name=api`` in its URL, or ``connect_args``) is counted as ``unset``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import sqlalchemy
from psycopg.conninfo import conninfo_to_dict

from pgwarden.config import TargetConfig

#: label value for everything beyond the configured names and the top N
OTHER = "other"
#: label value for connections without an application_name
UNSET = "unset"
#: pg_stat_activity.state -> the ``state`` label (every one is always exported)
STATE_LABELS: Mapping[str | None, str] = MappingProxyType(
    {
        "active": "active",
        "idle": "idle",
        "idle in transaction": "idle_in_transaction",
        "idle in transaction (aborted)": "idle_in_transaction_aborted",
        "fastpath function call": "fastpath_function_call",
        "disabled": "disabled",
        None: "unknown",
    }
)
STATES: tuple[str, ...] = tuple(dict.fromkeys(STATE_LABELS.values()))

_SETTINGS_SQL = sqlalchemy.text(
    """
    SELECT current_setting('max_connections')::int,
           current_setting('superuser_reserved_connections')::int,
           coalesce(nullif(current_setting('reserved_connections', true), ''), '0')::int,
           current_setting('server_version_num')::int,
           coalesce(extract(epoch FROM max(clock_timestamp() - xact_start)
                    FILTER (WHERE pid <> pg_backend_pid())), 0)::float8,
           coalesce(extract(epoch FROM max(clock_timestamp() - state_change)
                    FILTER (WHERE state LIKE 'idle in transaction%')), 0)::float8,
           count(*) FILTER (WHERE wait_event_type = 'Lock'),
           count(*) FILTER (WHERE backend_type IS NULL AND datname IS NOT NULL)
      FROM pg_stat_activity
     WHERE backend_type = 'client backend' OR (backend_type IS NULL AND datname IS NOT NULL)
    """
)
_GROUPS_SQL = sqlalchemy.text(
    """
    SELECT state, datname, usename, application_name, count(*)
      FROM pg_stat_activity
     WHERE backend_type = 'client backend' OR (backend_type IS NULL AND datname IS NOT NULL)
     GROUP BY 1, 2, 3, 4
    """
)


@dataclass(frozen=True)
class Group:
    """Client backends sharing a state, database, user and application."""

    state: str
    database: str
    user: str
    application: str
    count: int


@dataclass(frozen=True)
class Activity:
    """What one sample read from the server, before any label bounding."""

    max_connections: int
    superuser_reserved: int
    reserved: int
    version_num: int
    oldest_xact_s: float
    oldest_idle_in_xact_s: float
    lock_waiting: int
    hidden: int
    groups: tuple[Group, ...]

    @property
    def usable(self) -> int:
        """Slots open to ordinary roles: what applications can actually get."""
        return max(self.max_connections - self.superuser_reserved - self.reserved, 0)

    @property
    def total(self) -> int:
        return sum(g.count for g in self.groups)

    def count(self, *, database: str | None = None, application: str | None = None) -> int:
        return sum(
            g.count
            for g in self.groups
            if (database is None or g.database == database)
            and (application is None or g.application == application)
        )


def read_activity(conn: sqlalchemy.Connection) -> Activity:
    """Read one :class:`Activity` (two queries, one transaction, one statistics snapshot)."""
    with conn.begin():
        row = conn.execute(_SETTINGS_SQL).one()
        rows = conn.execute(_GROUPS_SQL).all()
    groups = tuple(
        Group(
            state=STATE_LABELS.get(state, "unknown"),
            database=datname or "",
            user=usename or "",
            application=app or UNSET,
            count=int(n),
        )
        for state, datname, usename, app, n in rows
    )
    return Activity(
        max_connections=int(row[0]),
        superuser_reserved=int(row[1]),
        reserved=int(row[2]),
        version_num=int(row[3]),
        oldest_xact_s=float(row[4]),
        oldest_idle_in_xact_s=float(row[5]),
        lock_waiting=int(row[6]),
        hidden=int(row[7]),
        groups=groups,
    )


def bound_labels(counts: Mapping[str, int], keep: Iterable[str], top: int) -> dict[str, int]:
    """``keep`` (always present, 0 if absent) + the ``top`` largest others + ``other``.

    ``other`` is always present too, so series do not appear and vanish.  Ties are broken by
    name, so the chosen labels do not flap between equal counts.
    """
    kept = dict.fromkeys(keep)
    result = {name: counts.get(name, 0) for name in kept}
    others = sorted(
        ((n, name) for name, n in counts.items() if name not in kept), key=lambda x: (-x[0], x[1])
    )
    for n, name in others[:top]:
        result[name] = n
    result[OTHER] = result.get(OTHER, 0) + sum(n for n, _ in others[top:])
    return result


def _sum_by(groups: Iterable[Group], attr: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for g in groups:
        key = getattr(g, attr)
        out[key] = out.get(key, 0) + g.count
    return out


def target_database(target: TargetConfig) -> str:
    """The database a target's DSN names (libpq's default: the user name)."""
    params = {k: str(v) for k, v in conninfo_to_dict(target.dsn).items() if v is not None}
    return params.get("dbname") or params.get("user") or ""


def _target_user(target: TargetConfig) -> str | None:
    return {k: str(v) for k, v in conninfo_to_dict(target.dsn).items()}.get("user")


@dataclass(frozen=True)
class ServerSample:
    """One server's connections, labels already bounded."""

    server: str
    targets: tuple[str, ...]
    max_connections: int
    usable: int
    total: int
    saturation: float
    oldest_xact_s: float
    oldest_idle_in_xact_s: float
    lock_waiting: int
    hidden: int
    version_num: int
    by_state: Mapping[str, int] = field(default_factory=dict)
    by_database: Mapping[str, int] = field(default_factory=dict)
    by_user: Mapping[str, int] = field(default_factory=dict)
    #: per target: its database's connections by application_name
    by_application: Mapping[str, Mapping[str, int]] = field(default_factory=dict)


def summarize(
    activity: Activity, server: str, targets: Iterable[TargetConfig], top: int
) -> ServerSample:
    """Bound the labels and compute the ratios of one :class:`Activity`."""
    targets = tuple(targets)
    states = dict.fromkeys(STATES, 0)
    states.update(_sum_by(activity.groups, "state"))
    users = dict.fromkeys(u for t in targets if (u := _target_user(t)))
    total = activity.total
    usable = activity.usable
    return ServerSample(
        server=server,
        targets=tuple(t.name for t in targets),
        max_connections=activity.max_connections,
        usable=usable,
        total=total,
        saturation=total / usable if usable else 0.0,
        oldest_xact_s=activity.oldest_xact_s,
        oldest_idle_in_xact_s=activity.oldest_idle_in_xact_s,
        lock_waiting=activity.lock_waiting,
        hidden=activity.hidden,
        version_num=activity.version_num,
        by_state=MappingProxyType(states),
        by_database=MappingProxyType(
            bound_labels(_sum_by(activity.groups, "database"), map(target_database, targets), top)
        ),
        by_user=MappingProxyType(bound_labels(_sum_by(activity.groups, "user"), users, top)),
        by_application=MappingProxyType(
            {t.name: MappingProxyType(_applications(activity, t, top)) for t in targets}
        ),
    )


def _applications(activity: Activity, target: TargetConfig, top: int) -> dict[str, int]:
    """Connections to ``target``'s database by application: its pools, the top N, other."""
    database = target_database(target)
    in_database = [g for g in activity.groups if g.database == database]
    return bound_labels(
        _sum_by(in_database, "application"), (p.application for p in target.pools), top
    )


@dataclass(frozen=True)
class AppPoolSample:
    """One configured application pool of one target."""

    target: str
    database: str
    application: str
    connections: int
    capacity: int
    saturation: float
    at_limit_s: float


class AtLimitTracker:
    """Since when each pool has been at (or beyond) its capacity, on monotonic time.

    Owned by one thread.  Pools not seen in a cycle are forgotten by :meth:`retain`, so a pool
    removed by a reload, or a server that went down, starts counting afresh.
    """

    def __init__(self) -> None:
        self._since: dict[tuple[str, str], float] = {}

    def update(self, key: tuple[str, str], at_limit: bool, now: float) -> float:
        """Record one observation; return the seconds spent at the limit so far (0 if not)."""
        if not at_limit:
            self._since.pop(key, None)
            return 0.0
        since = self._since.setdefault(key, now)
        return max(now - since, 0.0)

    def retain(self, keys: Iterable[tuple[str, str]]) -> None:
        wanted = set(keys)
        for key in [k for k in self._since if k not in wanted]:
            del self._since[key]


def application_pools(
    activity: Activity,
    targets: Iterable[TargetConfig],
    tracker: AtLimitTracker | None = None,
    now: float = 0.0,
) -> list[AppPoolSample]:
    """Each configured pool of ``targets`` against the connections its application holds."""
    out = []
    for target in targets:
        database = target_database(target)
        for pool in target.pools:
            held = activity.count(database=database, application=pool.application)
            capacity = pool.capacity
            saturation = held / capacity if capacity else 0.0
            at_limit = (
                tracker.update((target.name, pool.application), saturation >= 1.0, now)
                if tracker is not None
                else 0.0
            )
            out.append(
                AppPoolSample(
                    target=target.name,
                    database=database,
                    application=pool.application,
                    connections=held,
                    capacity=capacity,
                    saturation=saturation,
                    at_limit_s=at_limit,
                )
            )
    return out
