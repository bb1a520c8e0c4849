"""The ``Last prune`` line of ``pgwarden check``: each target's last (non-dry) prune, read from
its record (:mod:`pgwarden.retention.lastprune`, ``<state_dir>/prune/<target>.json``).

A prune that could not delete what its plan named is a ``fail`` naming the first error (as
recorded: redacted), until a later prune succeeds (``pass``).  A record that cannot be read is
a ``warn``; a target never pruned since records exist gets no line.
"""

from __future__ import annotations

from pgwarden.config import Config
from pgwarden.monitor.verdicts import CheckResult
from pgwarden.retention.lastprune import PruneRecordError, PruneRecords

CHECK = "retention.last_prune"


def prune_checks(config: Config, target: str | None) -> dict[str, CheckResult]:
    """Per target with a record: its last prune as a checklist item."""
    names = [target] if target else [t.name for t in config.targets]
    records = PruneRecords(config.daemon.state_dir)
    out: dict[str, CheckResult] = {}
    for name in names:
        try:
            record = records.read(name)
        except PruneRecordError as exc:
            out[name] = CheckResult(CHECK, "warn", str(exc), name)
            continue
        if record is None:
            continue
        when = record.at.strftime("%Y-%m-%d %H:%M:%S UTC")
        if record.ok:
            detail = f"{when}: ok, {record.deleted} backup(s) deleted"
            out[name] = CheckResult(CHECK, "pass", detail, name)
        else:
            more = f" (+{record.errors - 1} more)" if record.errors > 1 else ""
            detail = (
                f"{when}: FAILED with {record.errors} error(s): {record.first_error}{more}; "
                f"see pgwarden prune {name} --dry-run and the daemon log"
            )
            out[name] = CheckResult(CHECK, "fail", detail, name)
    return out
