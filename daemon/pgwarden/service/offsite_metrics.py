"""The off-site metrics (``pgwarden_offsite_*{target,destination}``) from the off-site job's
typed outcome and from the catalog.

:func:`record_offsite` is called by :func:`pgwarden.service.outcomes.record_job` for every
finished ``offsite`` job (its :class:`~.offsite_job.OffsiteJobOutcome`, kept on the job when it
failed too): it counts uploaded bytes and failures, sets each destination's "last run" gauges,
then :func:`refresh_offsite` sets the history gauges.  :func:`restore_offsite` runs at start-up
so that a restart fires no alert (DESIGN.md, "Metrics").

Where the values come from:

* the newest confirmed upload: always the catalog (``offsite_copies.uploaded_at``), so a
  restart restores it exactly;
* copies kept, bytes stored, oldest and newest copy: the destination's inventory, listed by the
  run's remote prune (the bucket is the truth; bytes include the manifests); before the first
  run after a start, the catalog's confirmed copies (objects only);
* the last run's success: the outcome; at start-up, whether the newest recorded attempt of the
  pair failed (:mod:`pgwarden.catalog.offsite_summary`).  The last remote prune's success is
  not in the catalog: it is absent until the first run after a start.

Like :mod:`.outcomes`, nothing here raises: a catalog error is logged and leaves the gauges.
"""

from __future__ import annotations

import contextlib

from pgwarden import logsetup
from pgwarden.catalog.offsite_summary import DestinationSummary, destination_summaries
from pgwarden.config import Config
from pgwarden.errors import PgwardenError, describe
from pgwarden.metrics.offsite import OffsiteMetrics
from pgwarden.retention.remote import RemoteInventory
from pgwarden.service.jobs import Job
from pgwarden.service.offsite_job import OffsiteJobOutcome
from pgwarden.service.state import ServiceState

log = logsetup.get_logger("pgwarden.outcomes")


def destinations(config: Config, target: str) -> tuple[str, ...]:
    """The names of the destinations ``target`` is copied to (none for an unknown target)."""
    if not any(t.name == target for t in config.targets):
        return ()
    return tuple(d.name for d in config.offsite_for(target))


def record_offsite(state: ServiceState, job: Job, result: str) -> None:
    """Count one finished off-site job, then refresh its target's gauges."""
    m = state.metrics.offsite
    outcome = job.result if isinstance(job.result, OffsiteJobOutcome) else None
    inventories: dict[str, RemoteInventory] = {}
    if outcome is not None:
        _count_uploads(m, outcome, result)
        inventories = _count_prunes(m, outcome, result)
    elif result == "failure":  # failed before it could say where: every destination did
        for name in destinations(job.config, job.target):
            m.upload_failures.labels(job.target, name).inc()
            m.upload_last_ok.labels(job.target, name).set(0)
    refresh_offsite(state, job.target, inventories)


def _count_uploads(m: OffsiteMetrics, outcome: OffsiteJobOutcome, result: str) -> None:
    """Bytes of the confirmed copies; failures and the last run's verdict unless the run was
    cancelled (stopped by an operator or a shutdown: its unfinished copies are no failure)."""
    target, uploads = outcome.target, outcome.uploads
    for copy in uploads.copies:
        if copy.ok:
            m.upload_bytes.labels(target, copy.destination).inc(copy.size_bytes)
    if result == "cancelled":
        return
    failed = [c.destination for c in uploads.copies if not c.ok] + list(uploads.unreachable)
    for name in failed:  # each failed copy, and once per unreachable destination
        m.upload_failures.labels(target, name).inc()
    for name in outcome.destinations:  # each one met: uploaded to, unreachable or pruned
        m.upload_last_ok.labels(target, name).set(0 if name in failed else 1)


def _count_prunes(
    m: OffsiteMetrics, outcome: OffsiteJobOutcome, result: str
) -> dict[str, RemoteInventory]:
    inventories: dict[str, RemoteInventory] = {}
    for prune in outcome.prunes:
        if prune.inventory is not None:
            inventories[prune.destination] = prune.inventory
        if prune.dry_run:
            continue
        if not prune.ok:
            m.prune_failures.labels(outcome.target, prune.destination).inc()
        if result != "cancelled":
            m.prune_last_ok.labels(outcome.target, prune.destination).set(1 if prune.ok else 0)
    return inventories


def refresh_offsite(
    state: ServiceState, target: str, inventories: dict[str, RemoteInventory] | None = None
) -> None:
    """The history gauges of each of ``target``'s destinations (see the module docstring);
    series of a destination the target no longer uses are dropped."""
    m = state.metrics.offsite
    names = destinations(state.config, target)
    for stale_target, stale in m.pairs():
        if stale_target == target and stale not in names:
            m.forget(target, stale)
    if not names:
        return
    try:
        summaries = destination_summaries(state.catalog, [(target, n) for n in names])
    except PgwardenError as exc:
        log.warning("cannot refresh off-site metrics", target=target, error=describe(exc))
        return
    for summary in summaries:
        m.init(target, summary.destination)
        inventory = (inventories or {}).get(summary.destination)
        _set_history(m, summary, inventory)


def _set_history(
    m: OffsiteMetrics, summary: DestinationSummary, inventory: RemoteInventory | None
) -> None:
    pair = (summary.target, summary.destination)
    if summary.last_upload is not None:
        m.last_upload.labels(*pair).set(summary.last_upload.timestamp())
    if inventory is not None:
        copies, stored = inventory.copies, inventory.stored_bytes
        oldest, newest = inventory.oldest_started, inventory.newest_started
    elif not m.has(m.objects, *pair):  # the last inventory stays until the next one
        copies, stored = summary.copies, summary.stored_bytes
        oldest, newest = summary.oldest_copy, summary.newest_copy
    else:
        return
    m.objects.labels(*pair).set(copies)
    m.stored_bytes.labels(*pair).set(stored)
    for gauge, moment in ((m.oldest_copy, oldest), (m.newest_copy, newest)):
        if moment is None:
            with contextlib.suppress(KeyError):
                gauge.remove(*pair)
        else:
            gauge.labels(*pair).set(moment.timestamp())


def restore_offsite(state: ServiceState, target: str) -> None:
    """At start-up: ``target``'s off-site gauges from the catalog, the last run's success
    from the newest recorded attempt of each destination."""
    m = state.metrics.offsite
    names = destinations(state.config, target)
    try:
        summaries = destination_summaries(state.catalog, [(target, n) for n in names])
    except PgwardenError as exc:
        log.warning("cannot restore off-site metrics", target=target, error=describe(exc))
        return
    for summary in summaries:
        if summary.failing or summary.last_upload is not None:
            m.upload_last_ok.labels(target, summary.destination).set(0 if summary.failing else 1)
    refresh_offsite(state, target)
