"""One monitoring cycle: every server and every PgBouncer of a config, into a :class:`Snapshot`.

A :class:`Sampler` is owned by one thread (the monitor thread, or a one-shot caller) and keeps
what must survive between cycles: the engines and admin connections, the "at limit since"
clocks of the application pools, the error counters, and which sources are down.

A source that cannot be sampled -- server down, connection refused, authentication or
credential failure, statement timeout -- is an *outcome*: it is exported as ``up = 0``, its
error counter grows, and one log line is written when it goes down and one when it comes back
(not one per cycle).  Any other exception is a bug and propagates to the caller.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg
import sqlalchemy.exc

from pgwarden import logsetup
from pgwarden.config import Config, MonitorConfig, PgBouncerConfig
from pgwarden.errors import PgwardenError, describe
from pgwarden.monitor.connections import (
    AppPoolSample,
    AtLimitTracker,
    application_pools,
    read_activity,
    summarize,
)
from pgwarden.monitor.connlimits import read_limits, summarize_limits
from pgwarden.monitor.engines import EngineCache, ServerPlan, plan_servers
from pgwarden.monitor.pgbouncer import BouncerClients
from pgwarden.monitor.snapshot import BouncerStatus, OwnPool, ServerStatus, Snapshot

log = logsetup.get_logger("pgwarden.monitor")

#: what a failed sample may raise; anything else is a bug
SAMPLE_ERRORS = (sqlalchemy.exc.SQLAlchemyError, psycopg.Error, PgwardenError, OSError)


class Sampler:
    """Samples a config's servers and PgBouncers; not thread-safe (one owner)."""

    def __init__(
        self,
        *,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self.engines = EngineCache()
        self.bouncers = BouncerClients()
        self.at_limit = AtLimitTracker()
        self._server_errors: dict[str, int] = {}
        self._bouncer_errors: dict[str, int] = {}
        self._down: dict[tuple[str, str], float] = {}

    def cycle(self, config: Config) -> Snapshot:
        """Sample everything ``config`` names once; forget what it no longer names."""
        monitor = config.monitor
        plans = plan_servers(config.targets)
        servers: list[ServerStatus] = []
        pools: list[AppPoolSample] = []
        for plan in plans:
            status, app_pools = self._sample_server(plan, monitor)
            servers.append(status)
            pools += app_pools
        bouncers = [self._sample_bouncer(b) for b in config.pgbouncers]
        self._forget(plans, config.pgbouncers, pools)
        return Snapshot(
            taken_at=self._wall(),
            servers=tuple(servers),
            app_pools=tuple(pools),
            bouncers=tuple(bouncers),
            server_errors=dict(self._server_errors),
            bouncer_errors=dict(self._bouncer_errors),
        )

    def _sample_server(
        self, plan: ServerPlan, monitor: MonitorConfig
    ) -> tuple[ServerStatus, list[AppPoolSample]]:
        self._server_errors.setdefault(plan.name, 0)
        targets = tuple(t.name for t in plan.targets)
        try:
            with self.engines.connect(plan, monitor) as conn:
                activity = read_activity(conn)
                limits = read_limits(conn)
        except SAMPLE_ERRORS as exc:
            error = describe(exc)
            self._server_errors[plan.name] += 1
            self._transition("server", plan.name, error, targets=list(targets))
            return ServerStatus(plan.name, targets, False, None, self._own(plan), error), []
        self._transition("server", plan.name, None, targets=list(targets))
        sample = summarize(activity, plan.name, plan.targets, monitor.top_applications)
        pools = application_pools(activity, plan.targets, self.at_limit, self._monotonic())
        if activity.hidden and ("hidden", plan.name) not in self._down:
            self._down[("hidden", plan.name)] = self._monotonic()
            log.warning(
                "the monitoring role cannot see other sessions' state; grant it pg_monitor",
                target=plan.name,
                hidden=activity.hidden,
            )
        status = ServerStatus(
            plan.name,
            targets,
            True,
            sample,
            self._own(plan),
            limits=summarize_limits(activity, limits),
        )
        return status, pools

    def _own(self, plan: ServerPlan) -> OwnPool | None:
        found = self.engines.stats(plan.key)
        if found is None:
            return None
        stats, timeouts = found
        return OwnPool(
            checked_out=stats["checked_out"],
            overflow=stats["overflow"],
            connections=stats["checked_out"] + stats["checked_in"],
            capacity=stats["capacity"],
            timeouts=timeouts,
        )

    def _sample_bouncer(self, bouncer: PgBouncerConfig) -> BouncerStatus:
        self._bouncer_errors.setdefault(bouncer.name, 0)
        try:
            sample = self.bouncers.sample(bouncer)
        except SAMPLE_ERRORS as exc:
            error = describe(exc)
            self._bouncer_errors[bouncer.name] += 1
            self._transition("pgbouncer", bouncer.name, error)
            return BouncerStatus(bouncer.name, False, None, error)
        self._transition("pgbouncer", bouncer.name, None)
        return BouncerStatus(bouncer.name, True, sample)

    def _transition(self, kind: str, name: str, error: str | None, **extra: object) -> None:
        """Log a source going down or coming back, once per change."""
        key = (kind, name)
        if error is not None and key not in self._down:
            self._down[key] = self._monotonic()
            log.warning(f"cannot sample the {kind}", name=name, error=error, **extra)
        elif error is None and key in self._down:
            down_for = self._monotonic() - self._down.pop(key)
            log.info(f"sampling the {kind} again", name=name, down_s=round(down_for, 1), **extra)

    def _forget(
        self,
        plans: list[ServerPlan],
        bouncers: tuple[PgBouncerConfig, ...],
        pools: list[AppPoolSample],
    ) -> None:
        servers = {p.name for p in plans}
        names = {b.name for b in bouncers}
        self.engines.retain(p.key for p in plans)
        self.bouncers.retain(names)
        self.at_limit.retain((p.target, p.application) for p in pools)
        for counts, keep in ((self._server_errors, servers), (self._bouncer_errors, names)):
            for name in [n for n in counts if n not in keep]:
                del counts[name]
        for kind, name in list(self._down):
            if name not in (names if kind == "pgbouncer" else servers):
                del self._down[(kind, name)]

    def close(self) -> None:
        self.engines.close()
        self.bouncers.close()
