"""``pgwarden offsite sync [TARGET] [--destination NAME]`` and ``pgwarden offsite list``.

``sync`` is the daemon's ``offsite`` job run once, without a daemon (like ``pgwarden backup``):
every complete local backup not yet confirmed on a destination is uploaded (newest first),
then each destination's own retention runs.  It exits 1 when any copy or prune failed or a
destination was unreachable, 2 for an unknown target or destination.  ``list`` shows the
catalog's record of every copy: where, in which state, and the last error of a failed one;
a complete local backup no run has tried to send to a destination yet shows as ``pending``
(``skipped`` when that destination's retention would delete it at once).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from pgwarden.backup.offsite import object_key
from pgwarden.catalog.offsite import OffsiteCopyRecord, copies, pending_backups
from pgwarden.catalog.records import BackupRecord
from pgwarden.commands.context import command_env, human_bytes, table
from pgwarden.config.offsite import OffsiteConfig
from pgwarden.errors import EXIT_FAILED, EXIT_OK, UsageError
from pgwarden.retention.subtargets import prune_units
from pgwarden.service.offsite_job import OffsiteJobOutcome, OffsiteRun, doomed, run_offsite


def cmd_offsite(args: argparse.Namespace) -> int:
    if args.action == "sync":
        return _sync(args)
    return _list(args)


def _sync(args: argparse.Namespace) -> int:
    outcomes: list[OffsiteJobOutcome] = []
    with command_env(args) as env:
        config = env.config
        if args.destination is not None:
            config.destination(args.destination)  # NotFoundError naming the configured ones
        if args.target is not None:
            targets = [config.target(args.target)]
            if not config.offsite_for(targets[0]):
                raise UsageError(f"target {args.target!r} has no [[offsite]] destination")
        else:
            targets = [t for t in config.targets if config.offsite_for(t)]
            if not targets:
                raise UsageError("no target has an [[offsite]] destination")
        # a whole-server target's copies are its databases' (every one with backups)
        targets = [unit for t in targets for unit in prune_units(t, env.catalog)]
        for target in targets:
            names = [d.name for d in config.offsite_for(target)]
            if args.destination is not None and args.destination not in names:
                continue
            run = OffsiteRun(
                target,
                config,
                env.catalog,
                env.storage,
                destinations=None if args.destination is None else (args.destination,),
            )
            outcomes.append(run_offsite(run))
    if args.json:
        print(json.dumps([o.as_dict() for o in outcomes], indent=2))
    else:
        for outcome in outcomes:
            _print_outcome(outcome)
    return EXIT_OK if all(o.ok for o in outcomes) else EXIT_FAILED


def _print_outcome(outcome: OffsiteJobOutcome) -> None:
    uploads = outcome.uploads
    sent = [c for c in uploads.copies if c.ok]
    print(
        f"{outcome.target}: {len(sent)} copies uploaded ({human_bytes(uploads.uploaded_bytes)})"
        + ("" if outcome.ok else ", FAILED")
    )
    for copy in uploads.copies:
        state = "ok" if copy.ok else f"FAILED: {copy.error}"
        print(
            f"  {copy.destination}: {copy.backup_id[:8]} -> {copy.key} "
            f"({human_bytes(copy.size_bytes)}, {copy.duration_s:.1f} s) {state}"
        )
    for reason in uploads.reasons:
        print(f"  unreachable: {reason}")
    for prune in outcome.prunes:
        inventory = prune.inventory
        held = "" if inventory is None else f", {inventory.copies} copies held"
        print(f"  {prune.destination}: pruned {len(prune.deleted)}{held}")
        for error in prune.errors:
            print(f"  {prune.destination}: prune FAILED: {error}")


def _list(args: argparse.Namespace) -> int:
    with command_env(args) as env:
        config = env.config
        chosen = [config.target(args.target)] if args.target is not None else config.targets
        targets = [unit for t in chosen for unit in prune_units(t, env.catalog)]
        names = {t.name for t in targets}
        found = [_copy_dict(c) for c in copies(env.catalog) if c.target in names]
        recorded = {(c["backup_id"], c["destination"]) for c in found}
        for target in targets:
            for destination in config.offsite_for(target):
                skipped = doomed(env.catalog, target.name, destination)
                for record in pending_backups(
                    env.catalog, target=target.name, destination=destination.name
                ):
                    if (record.id, destination.name) not in recorded and record.path:
                        found.append(_pending_dict(record, destination, record.id in skipped))
    # newest backup first, like ``pgwarden backups``
    found.sort(key=lambda c: (str(c["backup_started_at"]), str(c["destination"])), reverse=True)
    if args.json:
        print(json.dumps(found, indent=2))
        return EXIT_OK
    rows = [
        [
            str(c["backup_id"])[:8],
            str(c["target"]),
            str(c["destination"]),
            str(c["state"]),
            human_bytes(size if isinstance(size := c["size_bytes"], int) else None),
            "yes" if c["encrypted"] else "no",
            str(c["uploaded_at"] or "-")[:19].replace("T", " "),
            str(c["attempts"]),
            str(c["key"]),
            str(c["error"] or "")[:60],
        ]
        for c in found
    ]
    headers = [
        "BACKUP",
        "TARGET",
        "DESTINATION",
        "STATE",
        "SIZE",
        "ENCRYPTED",
        "UPLOADED (UTC)",
        "ATTEMPTS",
        "KEY",
        "ERROR",
    ]
    print(table(rows, headers) if rows else "no off-site copies")
    return EXIT_OK


def _pending_dict(
    record: BackupRecord, destination: OffsiteConfig, skipped: bool
) -> dict[str, object]:
    """A complete local backup no run has tried to send to ``destination`` yet: ``pending``,
    or ``skipped`` when the destination's retention would delete it at once."""
    encrypted = destination.encryption is not None
    return {
        "backup_id": record.id,
        "target": record.target,
        "destination": destination.name,
        "key": object_key(record.target, record.path or "", encrypted=encrypted),
        "state": "skipped" if skipped else "pending",
        "size_bytes": None,
        "object_sha256": None,
        "encrypted": encrypted,
        "uploaded_at": None,
        "attempts": 0,
        "error": "[offsite.retention] would delete it at once" if skipped else None,
        "updated_at": None,
        "backup_started_at": record.started_at.isoformat(),
    }


def _copy_dict(copy: OffsiteCopyRecord) -> dict[str, object]:
    data = asdict(copy)
    for key, value in list(data.items()):
        if hasattr(value, "isoformat"):
            data[key] = value.isoformat()
    data["state"] = str(copy.state)
    return data
