"""SQLAlchemy engines for pgwarden's own queries, with the strategy's pool settings.

An engine is built from a :class:`~pgwarden.pg.conninfo.ConnSpec` through a ``creator``, so the
password never sits in a URL (SQLAlchemy would show it in ``repr(engine.url)`` and error
messages).  Every pooled connection carries ``application_name`` (``pgwarden`` by default:
pgwarden's own connections are recognisable in ``pg_stat_activity``) and a server-side
``statement_timeout`` set at connection start through ``options=-c statement_timeout=...``, so
a monitoring query can never hang a thread.  ``pool_pre_ping`` replaces connections that the
server (or a restart) closed.

:func:`pool_stats` reads the pool's counters for the metrics of pgwarden's own pool.

The timeout travels as a startup parameter, which PgBouncer refuses ("unsupported startup
parameter: options") unless its ``ignore_startup_parameters`` lists ``options`` -- and then the
timeout is silently not applied: point these engines at PostgreSQL itself.
"""

from __future__ import annotations

from typing import TypedDict

import sqlalchemy
from sqlalchemy.pool import QueuePool

from pgwarden.config import PoolSettings
from pgwarden.pg.conninfo import ConnSpec

DEFAULT_APPLICATION_NAME = "pgwarden"

__all__ = ["DEFAULT_APPLICATION_NAME", "PoolStats", "make_engine", "pool_stats"]


class PoolStats(TypedDict):
    """A snapshot of a pool; ``overflow`` counts connections beyond ``size`` (never negative)."""

    size: int
    max_overflow: int
    capacity: int
    checked_out: int
    checked_in: int
    overflow: int


def statement_timeout_option(statement_timeout_s: float, existing: str | None = None) -> str:
    """The ``options`` conninfo value: ``existing`` options plus ``-c statement_timeout=<ms>``
    (0 disables the timeout, as in PostgreSQL)."""
    if statement_timeout_s < 0:
        raise ValueError(f"statement_timeout_s must be >= 0 (got {statement_timeout_s})")
    ms = round(statement_timeout_s * 1000)
    if statement_timeout_s > 0:
        ms = max(ms, 1)  # a sub-millisecond timeout must not silently become "no timeout"
    option = f"-c statement_timeout={ms}"
    return f"{existing} {option}" if existing else option


def make_engine(
    spec: ConnSpec,
    pool: PoolSettings,
    *,
    statement_timeout_s: float,
    application_name: str = DEFAULT_APPLICATION_NAME,
) -> sqlalchemy.Engine:
    """A ``postgresql+psycopg`` engine for ``spec`` with ``pool``'s sizes and timeouts."""
    options = statement_timeout_option(statement_timeout_s, spec.params().get("options"))

    def creator() -> object:
        return spec.connect(application_name=application_name, options=options)

    return sqlalchemy.create_engine(
        "postgresql+psycopg://",
        creator=creator,
        poolclass=QueuePool,
        pool_size=pool.pool_size,
        max_overflow=pool.max_overflow,
        pool_timeout=pool.pool_timeout,
        pool_recycle=pool.pool_recycle,
        pool_pre_ping=True,
    )


def pool_stats(engine: sqlalchemy.Engine) -> PoolStats:
    """The engine's pool counters (all zero for a pool that does not keep connections)."""
    pool = engine.pool
    if not isinstance(pool, QueuePool):
        return PoolStats(
            size=0, max_overflow=0, capacity=0, checked_out=0, checked_in=0, overflow=0
        )
    size = pool.size()
    # QueuePool exposes no accessor for its configured max_overflow (-1 means unlimited)
    max_overflow = int(getattr(pool, "_max_overflow", 0))
    return PoolStats(
        size=size,
        max_overflow=max_overflow,
        capacity=size + max(max_overflow, 0),
        checked_out=pool.checkedout(),
        checked_in=pool.checkedin(),
        overflow=max(pool.overflow(), 0),
    )
