"""Monitoring: connection saturation (server, application pools, PgBouncer, pgwarden's own
pool), the Prometheus view of it, and the production checklist behind ``pgwarden check``.

* :mod:`.connections` -- one sample of a server's ``pg_stat_activity``, bounded labels;
* :mod:`.pgbouncer` -- ``SHOW POOLS/STATS/DATABASES`` on a PgBouncer admin console;
* :mod:`.engines` -- servers to sample (targets deduplicated) and pgwarden's engines;
* :mod:`.sampler` -- one cycle over a config into a :class:`~.snapshot.Snapshot`;
* :mod:`.snapshot` -- the immutable snapshot and the Prometheus collector reading it;
* :mod:`.thread` -- the ``monitor`` thread, and pgwarden's connection budget;
* :mod:`.checklist` -- the strategy's production checklist as pass/warn/fail checks.
"""
