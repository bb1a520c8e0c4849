"""The demo's simulated application: live traffic for the pool-saturation metrics.

A :class:`DemoApp` is what a small web application on the VPS would be: one SQLAlchemy engine
created exactly as the strategy says (``pool_size=5, max_overflow=10, pool_timeout=30,
pool_recycle=1800``) and connecting with an ``application_name`` (``shop-api``, the
``[[targets.pools]]`` entry of ``demo.toml``), and worker threads that run the shop's queries.

The load follows a cosine over :data:`PERIOD_S` seconds: from one busy worker up to as many
as the pool can hold (``pool_size + max_overflow``) and back.  Each busy worker checks out a
connection, reads a user's orders and holds the connection a little (``pg_sleep``), so the
connections the application holds -- ``pgwarden_application_connections`` and
``pgwarden_application_pool_saturation_ratio`` -- climb to the pool's capacity and fall back to
the ``pool_size`` connections the pool keeps open.

:meth:`DemoApp.stop` (the demo calls it on Ctrl-C, before PostgreSQL stops) ends the workers
and closes the pool's connections.
"""

from __future__ import annotations

import math
import random
import threading
import time

import sqlalchemy
import sqlalchemy.exc
from psycopg.conninfo import conninfo_to_dict

from pgwarden import logsetup
from pgwarden.config import PoolSettings

log = logsetup.get_logger("pgwarden.commands.demo_app")

#: the application_name the demo's application connects with (demo.toml's [[targets.pools]])
APPLICATION = "shop-api"
#: one rise and fall of the load, in seconds
PERIOD_S = 60.0
#: how long a busy worker holds its connection per request, in seconds
HOLD_S = 0.4

_QUERY = sqlalchemy.text(
    "SELECT count(*), coalesce(sum(total), 0) FROM orders WHERE user_id = :user"
)
_HOLD = sqlalchemy.text("SELECT pg_sleep(:s)")


def load_level(elapsed_s: float, capacity: int, period_s: float = PERIOD_S) -> int:
    """Busy workers at ``elapsed_s``: 1 at the start, ``capacity`` at half period, 1 again."""
    phase = (1 - math.cos(2 * math.pi * (elapsed_s % period_s) / period_s)) / 2
    return 1 + round((capacity - 1) * phase)


class DemoApp:
    """A pooled application with rising and falling load; ``start`` once, ``stop`` once."""

    def __init__(
        self,
        conninfo: str,
        *,
        application: str = APPLICATION,
        pool: PoolSettings | None = None,
        period_s: float = PERIOD_S,
    ) -> None:
        self.pool = pool or PoolSettings()
        self.application = application
        self.period_s = period_s
        # the strategy's engine, as an application writes it
        params = {k: str(v) for k, v in conninfo_to_dict(conninfo).items() if v is not None}
        url = sqlalchemy.URL.create(
            "postgresql+psycopg",
            username=params.pop("user", None),
            database=params.pop("dbname", None),
            query={**params, "application_name": application},
        )
        self.engine = sqlalchemy.create_engine(
            url,
            pool_size=self.pool.pool_size,
            max_overflow=self.pool.max_overflow,
            pool_timeout=self.pool.pool_timeout,
            pool_recycle=self.pool.pool_recycle,
            pool_pre_ping=True,
        )
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = 0.0
        self.requests = 0
        self.errors = 0
        self._count_lock = threading.Lock()

    @property
    def capacity(self) -> int:
        return self.pool.capacity

    def level(self) -> int:
        return load_level(time.monotonic() - self._started, self.capacity, self.period_s)

    def start(self) -> None:
        self._started = time.monotonic()
        for i in range(self.capacity):
            thread = threading.Thread(
                target=self._worker, args=(i,), name=f"demo-app-{i}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _worker(self, index: int) -> None:
        rng = random.Random(index)  # noqa: S311 -- simulated traffic, not cryptography
        while not self._stop.is_set():
            if index >= self.level():
                self._stop.wait(0.2)
                continue
            try:
                with self.engine.connect() as conn:
                    conn.execute(_QUERY, {"user": rng.randint(1, 5000)}).one()
                    conn.execute(_HOLD, {"s": HOLD_S * rng.uniform(0.5, 1.5)})
                    conn.commit()
                with self._count_lock:
                    self.requests += 1
            except sqlalchemy.exc.SQLAlchemyError as exc:
                with self._count_lock:
                    self.errors += 1
                if not self._stop.is_set():
                    log.warning("demo app: request failed", error=type(exc).__name__)
                self._stop.wait(1.0)
                continue
            self._stop.wait(rng.uniform(0.0, 0.1))

    def stop(self, timeout_s: float = 10.0) -> None:
        """End the workers (each finishes its request) and close the pool's connections."""
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
        self.engine.dispose()
