"""Which servers to sample, and pgwarden's own SQLAlchemy engine for each of them.

Targets are grouped by server: several targets whose DSNs name the same host (or socket
directory), port and user are one server, sampled once through the first of them (in config
order), whose name labels the server's metrics.  The user is part of the key because what
``pg_stat_activity`` shows depends on the role's privileges.

:class:`EngineCache` keeps one engine per server (``monitor.pool`` settings, pre-ping on,
``monitor.statement_timeout`` on every statement, ``application_name=pgwarden-monitor``).
The password is resolved again at every cycle, so a rotated password file is picked up; an
engine is rebuilt only when its connection spec or settings changed (after a reload, say), and
disposed when its server leaves the configuration.  The monitor checks out one connection per
server at a time, so a pool never opens more than one connection although its settings would
allow more.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import sqlalchemy
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from pgwarden.config import MonitorConfig, PoolSettings, TargetConfig
from pgwarden.pg.conninfo import ConnSpec
from pgwarden.pg.engine import PoolStats, make_engine, pool_stats

APPLICATION_NAME = "pgwarden-monitor"


@dataclass(frozen=True)
class ServerKey:
    """Identifies a server as a connection string does: host or socket dir, port, user."""

    host: str
    port: str
    user: str

    @classmethod
    def of(cls, dsn: str) -> ServerKey:
        params = ConnSpec(dsn).params()
        host = params.get("host") or params.get("hostaddr") or ""
        return cls(host=host, port=params.get("port", ""), user=params.get("user", ""))


@dataclass(frozen=True)
class ServerPlan:
    """One server to sample: its key, its label (the first target's name), its targets."""

    key: ServerKey
    name: str
    targets: tuple[TargetConfig, ...]

    @property
    def first(self) -> TargetConfig:
        return self.targets[0]


def plan_servers(targets: Iterable[TargetConfig]) -> list[ServerPlan]:
    """Group ``targets`` by :class:`ServerKey`, in config order."""
    groups: dict[ServerKey, list[TargetConfig]] = {}
    for target in targets:
        groups.setdefault(ServerKey.of(target.dsn), []).append(target)
    return [ServerPlan(key, members[0].name, tuple(members)) for key, members in groups.items()]


@dataclass
class _Entry:
    spec: ConnSpec
    pool: PoolSettings
    statement_timeout: float
    engine: sqlalchemy.Engine
    timeouts: int = 0


class EngineCache:
    """One engine per server key; used by a single thread."""

    def __init__(self, application_name: str = APPLICATION_NAME) -> None:
        self.application_name = application_name
        self._entries: dict[ServerKey, _Entry] = {}

    def _engine(self, plan: ServerPlan, monitor: MonitorConfig) -> _Entry:
        """The engine for ``plan``; raises ``CredentialError``/``UsageError`` on bad creds."""
        spec = ConnSpec.from_target(plan.first)
        entry = self._entries.get(plan.key)
        if (
            entry is not None
            and entry.spec == spec
            and entry.pool == monitor.pool
            and entry.statement_timeout == monitor.statement_timeout
        ):
            return entry
        if entry is not None:
            entry.engine.dispose()
        engine = make_engine(
            spec,
            monitor.pool,
            statement_timeout_s=monitor.statement_timeout,
            application_name=self.application_name,
        )
        timeouts = entry.timeouts if entry is not None else 0
        entry = _Entry(spec, monitor.pool, monitor.statement_timeout, engine, timeouts)
        self._entries[plan.key] = entry
        return entry

    @contextmanager
    def connect(self, plan: ServerPlan, monitor: MonitorConfig) -> Iterator[sqlalchemy.Connection]:
        """A pooled connection to ``plan``'s server; a pool timeout is counted, then raised."""
        entry = self._engine(plan, monitor)
        try:
            conn = entry.engine.connect()
        except PoolTimeoutError:
            entry.timeouts += 1
            raise
        with conn:
            yield conn

    def stats(self, key: ServerKey) -> tuple[PoolStats, int] | None:
        """The pool counters and the pool timeouts counted so far, if the engine exists."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        return pool_stats(entry.engine), entry.timeouts

    def retain(self, keys: Iterable[ServerKey]) -> None:
        """Dispose of the engines of servers that are no longer configured."""
        wanted = set(keys)
        for key in [k for k in self._entries if k not in wanted]:
            self._entries.pop(key).engine.dispose()

    def close(self) -> None:
        self.retain(())
