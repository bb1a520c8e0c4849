"""The monitor thread: a sampling cycle every ``monitor.interval`` seconds, published for
Prometheus.

``MonitorThread(config_getter, metrics)`` registers a :class:`MonitorCollector` on
``metrics.registry`` and, once started, runs :meth:`Sampler.cycle` on the config that
``config_getter()`` returns *at the start of each cycle* -- a reload takes effect at the next
cycle, and a cycle never sees half of two configs.  Cycles start ``interval`` seconds apart on
monotonic time; a cycle slower than the interval is followed by the next one at once, without
catching up missed ones.  :meth:`stop` sets an event that the wait between cycles watches, so
stopping is prompt (a cycle in progress finishes first: its queries are bounded by
``monitor.statement_timeout`` and its connection attempts by ``connect_timeout``, 10 s unless
the DSN says otherwise).

A server or PgBouncer that cannot be sampled is an outcome (see :mod:`.sampler`), never the
end of the thread.  Any other exception is a bug: it is logged and ends the thread, and the
daemon, which watches its threads, exits non-zero so that systemd restarts it.

**pgwarden's connection budget.**  pgwarden must never be what exhausts ``max_connections``:

* monitoring: **one connection per server** (targets sharing a server share it), held open
  between samples by a pool with pre-ping and ``pool_recycle``, shown in ``pg_stat_activity``
  as ``application_name = pgwarden-monitor``, plus one admin-console connection per PgBouncer;
* each running backup: one session that exports the snapshot and counts rows
  (``pgwarden-backup``) plus ``pg_dump``'s own (one; ``jobs + 1`` for the ``directory``
  format), so 2, or ``jobs + 2`` (4 with the defaults);
* each running restore drill (``pgwarden-verify``): one session that creates and drops the
  scratch database, plus ``pg_restore`` (``jobs + 1`` connections, 1 when ``jobs`` is 1) and
  then up to ``jobs`` sessions for the checks; ``verify.jobs`` is lowered to what the server
  can spare while keeping a margin for the applications, so 4 with the defaults;
* at most ``daemon.max_parallel_jobs`` jobs (2 by default) run at once, one per target.

With the defaults that is at most 1 + 2 x 4 = 9 connections per server, usually 1.  The
catalog, when it lives in PostgreSQL, adds its own small pool (``pgwarden-catalog``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from pgwarden import logsetup
from pgwarden.config import Config
from pgwarden.metrics import Metrics
from pgwarden.monitor.sampler import Sampler
from pgwarden.monitor.snapshot import MonitorCollector, Snapshot, SnapshotStore

log = logsetup.get_logger("pgwarden.monitor")

STOP_JOIN_TIMEOUT_S = 30.0


class MonitorThread:
    """The ``monitor`` thread of the daemon; ``start()``, ``stop()``, ``.thread``."""

    def __init__(self, config_getter: Callable[[], Config], metrics: Metrics) -> None:
        self._config_getter = config_getter
        self._metrics = metrics
        self.store = SnapshotStore()
        self.collector = MonitorCollector(self.store)
        metrics.registry.register(self.collector)
        self._sampler = Sampler()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="monitor", daemon=True)

    @property
    def snapshot(self) -> Snapshot:
        """The last published snapshot."""
        return self.store.current()

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = STOP_JOIN_TIMEOUT_S) -> None:
        """Stop sampling, wait for the thread, close connections, unregister the collector."""
        self._stop.set()
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout)
        if not self.thread.is_alive():
            self._sampler.close()
        try:
            self._metrics.registry.unregister(self.collector)
        except KeyError:
            return

    def run_once(self) -> Snapshot:
        """One cycle on the current config, published (what the thread does each interval)."""
        snapshot = self._sampler.cycle(self._config_getter())
        self.store.publish(snapshot)
        return snapshot

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                config = self._config_getter()
                if config.monitor.enabled:
                    self.store.publish(self._sampler.cycle(config))
                else:  # disabled by a reload: no stale series
                    self.store.publish(Snapshot())
                elapsed = time.monotonic() - started
                self._stop.wait(max(config.monitor.interval - elapsed, 0.0))
        except BaseException:
            log.exception("the monitor thread failed (a bug); the daemon will exit")
            raise
        finally:
            self._sampler.close()
