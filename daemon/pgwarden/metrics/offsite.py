"""The off-site metrics: one family per fact about the copies of a target on a destination.

Every series carries ``target`` and ``destination`` (an ``[[offsite]]`` name): both bounded by
the config.  Created on the :class:`~pgwarden.metrics.registry.Metrics` registry as its
``offsite`` attribute; the values are written by :mod:`pgwarden.service.outcomes` from the
off-site job's typed outcome, and the history gauges are restored from the catalog at start-up
(so that a restart fires no alert).

=================================================  ============================================
``offsite_last_upload_timestamp_seconds``          newest confirmed upload (object + manifest)
``offsite_upload_bytes_total``                     bytes of objects confirmed uploaded
``offsite_upload_failures_total``                  copies that failed, + a destination that
                                                   could not be reached at all (one per run)
``offsite_upload_last_run_success``                1 if the newest off-site run uploaded every
                                                   pending copy, 0 if one failed
``offsite_objects``                                complete copies on the destination
``offsite_stored_bytes``                           bytes under the target's prefix there
``offsite_oldest_copy_timestamp_seconds``          start time of the oldest copy kept there
``offsite_newest_copy_timestamp_seconds``          start time of the newest copy kept there
``offsite_prune_failures_total``                   remote prunes that could not delete all they
                                                   planned to
``offsite_prune_last_run_success``                 1 if the newest remote prune deleted all it
                                                   planned to, 0 if not
=================================================  ============================================
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

LABELS = ("target", "destination")


class OffsiteMetrics:
    """The off-site families, on the registry they are given."""

    def __init__(self, registry: CollectorRegistry) -> None:
        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(f"pgwarden_offsite_{name}", doc, LABELS, registry=registry)

        def counter(name: str, doc: str) -> Counter:
            return Counter(f"pgwarden_offsite_{name}", doc, LABELS, registry=registry)

        self.last_upload = gauge(
            "last_upload_timestamp_seconds",
            "Finish time of the newest confirmed off-site upload (object and manifest stored)",
        )
        self.upload_bytes = counter(
            "upload_bytes", "Bytes of off-site objects confirmed uploaded (ciphertext if encrypted)"
        )
        self.upload_failures = counter(
            "upload_failures",
            "Off-site copies that failed to upload, and runs that could not reach the destination",
        )
        self.upload_last_ok = gauge(
            "upload_last_run_success",
            "1 if the newest off-site run uploaded every pending copy, 0 if one failed",
        )
        self.objects = gauge(
            "objects", "Complete off-site copies (object and manifest) kept on the destination"
        )
        self.stored_bytes = gauge(
            "stored_bytes", "Bytes stored on the destination under the target's prefix"
        )
        self.oldest_copy = gauge(
            "oldest_copy_timestamp_seconds",
            "Start time of the backup of the oldest off-site copy kept on the destination",
        )
        self.newest_copy = gauge(
            "newest_copy_timestamp_seconds",
            "Start time of the backup of the newest off-site copy kept on the destination",
        )
        self.prune_failures = counter(
            "prune_failures",
            "Remote prunes that could not delete every copy their plan named",
        )
        self.prune_last_ok = gauge(
            "prune_last_run_success",
            "1 if the newest remote prune deleted all it planned to, 0 if a deletion failed",
        )

    @property
    def families(self) -> tuple[Gauge | Counter, ...]:
        return (
            self.last_upload,
            self.upload_bytes,
            self.upload_failures,
            self.upload_last_ok,
            self.objects,
            self.stored_bytes,
            self.oldest_copy,
            self.newest_copy,
            self.prune_failures,
            self.prune_last_ok,
        )

    def init(self, target: str, destination: str) -> None:
        """Create the pair's counters at 0, so that ``increase()`` sees the first failure."""
        for counter in (self.upload_bytes, self.upload_failures, self.prune_failures):
            counter.labels(target, destination)

    @staticmethod
    def has(family: Gauge | Counter, target: str, destination: str) -> bool:
        """Whether ``family`` has a series for the pair (without creating one)."""
        return any(
            s.labels.get("target") == target and s.labels.get("destination") == destination
            for metric in family.collect()
            for s in metric.samples
        )

    def pairs(self) -> set[tuple[str, str]]:
        """Every (target, destination) some family has a series for."""
        found: set[tuple[str, str]] = set()
        for family in self.families:
            for metric in family.collect():
                for sample in metric.samples:
                    labels = sample.labels
                    if "target" in labels and "destination" in labels:
                        found.add((labels["target"], labels["destination"]))
        return found

    def forget(self, target: str, destination: str | None = None) -> None:
        """Drop the series of a removed target (every destination) or of one pair."""
        for pair in self.pairs():
            if pair[0] == target and destination in (None, pair[1]):
                for family in self.families:
                    try:
                        family.remove(*pair)
                    except KeyError:
                        continue
