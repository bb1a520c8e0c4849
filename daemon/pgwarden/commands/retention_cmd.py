"""``pgwarden prune``, ``pgwarden pin|unpin`` and ``pgwarden catalog rebuild`` (no daemon needed).

Exit codes (DESIGN.md): 0 done, 1 something could not be done (a file that cannot be deleted,
a manifest that cannot be read or written), 2 usage (an unknown target or backup).
"""

from __future__ import annotations

import argparse
import json

from pgwarden.commands.context import CommandEnv, command_env, human_bytes, table
from pgwarden.config import TargetConfig
from pgwarden.errors import EXIT_FAILED, EXIT_OK, PgwardenError, UsageError
from pgwarden.restore.remote_catalog import rebuild_from_offsite
from pgwarden.retention.lastprune import PruneRecords, recorded_prune
from pgwarden.retention.prune import PruneOutcome
from pgwarden.retention.reconcile import RebuildReport, problems_by_target, rebuild_catalog, set_pin
from pgwarden.retention.subtargets import prune_units, stale_globals
from pgwarden.storage.locks import BackupLocks


def cmd_prune(args: argparse.Namespace) -> int:
    outcomes: list[PruneOutcome] = []
    failures: list[dict[str, str]] = []
    with command_env(args) as env:
        chosen = [env.config.target(args.target)] if args.target else list(env.config.targets)
        if not chosen:
            raise UsageError(f"{env.config.source}: no targets are configured")
        # a whole-server target: one plan per database it has backups of, gone ones included
        targets = [unit for t in chosen for unit in prune_units(t, env.catalog)]
        locks = BackupLocks(env.config.daemon.state_dir)
        records = PruneRecords(env.config.daemon.state_dir)
        for target in targets:
            try:
                outcomes.append(
                    recorded_prune(
                        target,
                        env.catalog,
                        env.storage,
                        dry_run=args.dry_run,
                        locks=locks,
                        records=records,
                    )
                )
            except PgwardenError as exc:  # one target's trouble does not stop the others
                failures.append({"target": target.name, "error": str(exc)})
        for server in (t for t in chosen if t.whole_server):
            _prune_globals(env, server, args, failures)
    ok = not failures and all(o.ok for o in outcomes)
    if args.json:
        print(
            json.dumps(
                {
                    "dry_run": args.dry_run,
                    "ok": ok,
                    "deleted": sum(o.deleted for o in outcomes),
                    "targets": [o.as_dict() for o in outcomes],
                    "failures": failures,
                },
                indent=2,
            )
        )
    else:
        texts = [_render_prune(o) for o in outcomes]
        texts += [f"{f['target']}: prune failed: {f['error']}" for f in failures]
        print("\n\n".join(texts))
    return EXIT_OK if ok else EXIT_FAILED


def _prune_globals(
    env: CommandEnv, target: TargetConfig, args: argparse.Namespace, failures: list[dict[str, str]]
) -> None:
    """A whole-server target's globals files that no kept backup needs (a line each)."""
    try:
        for path in stale_globals(target, env.catalog, env.storage):
            if not args.dry_run:
                env.storage.delete(path)
            if not args.json:
                done = "would be deleted (dry run)" if args.dry_run else "deleted"
                print(f"{target.name}: globals file {path.name} {done}")
    except PgwardenError as exc:
        failures.append({"target": target.name, "error": f"globals: {exc}"})


def _render_prune(outcome: PruneOutcome) -> str:
    done = outcome.as_dict()
    if outcome.dry_run:
        head = (
            f"{outcome.target}: {len(outcome.entries)} backups; would keep {done['kept']}, "
            f"would delete {done['would_delete']} (dry run: nothing was deleted)"
        )
    else:
        freed = human_bytes(outcome.freed_bytes)
        head = (
            f"{outcome.target}: {len(outcome.entries)} backups; kept {done['kept']}, "
            f"deleted {outcome.deleted} ({freed} freed)"
        )
    lines = [head]
    if outcome.entries:
        headers = ["ID", "STARTED (UTC)", "STATUS", "SIZE", "DECISION", "REASON"]
        if not outcome.dry_run:
            headers.insert(5, "RESULT")
        rows = []
        for entry in outcome.entries:
            r = entry.record
            row = [
                r.short_id,
                r.started_at.strftime("%Y-%m-%d %H:%M"),
                r.status,
                human_bytes(r.size_bytes),
                entry.action,
                entry.reason,
            ]
            if not outcome.dry_run:
                row.insert(5, entry.result)
            rows.append(row)
        lines.append(table(rows, headers))
    lines += [f"warning: {w}" for w in outcome.warnings]
    lines += [f"error: {e}" for e in outcome.errors]
    return "\n".join(lines)


def cmd_pin(args: argparse.Namespace) -> int:
    with command_env(args) as env:
        env.config.target(args.target)
        locks = BackupLocks(env.config.daemon.state_dir)
        record = set_pin(
            env.catalog, env.storage, args.backup, bool(args.pin), target=args.target, locks=locks
        )
    if args.json:
        print(
            json.dumps(
                {
                    "backup": {
                        "id": record.id,
                        "short_id": record.short_id,
                        "target": record.target,
                        "started_at": record.started_at.isoformat(),
                        "status": record.status,
                        "pinned": record.pinned,
                    }
                },
                indent=2,
            )
        )
    else:
        verb, note = (
            ("pinned", "kept out of retention until unpinned")
            if record.pinned
            else ("unpinned", "retention applies again")
        )
        print(
            f"{verb} backup {record.short_id} of {record.target}, taken "
            f"{record.started_at:%Y-%m-%d %H:%M} UTC ({note})"
        )
    return EXIT_OK


def cmd_catalog(args: argparse.Namespace) -> int:
    if args.action != "rebuild":
        raise UsageError(f"unknown catalog action {args.action!r}")
    with command_env(args) as env:
        report = rebuild_catalog(env.catalog, env.storage)
        remote = rebuild_from_offsite(env.config, env.catalog)  # the bucket's manifests too
        catalog_where = env.catalog.where
    if args.json:
        offsite = [r.as_dict() for r in remote]
        print(
            json.dumps({**report.as_dict(), "catalog": catalog_where, "offsite": offsite}, indent=2)
        )
    else:
        print("\n".join([_render_rebuild(report, catalog_where), *(r.text() for r in remote)]))
    return EXIT_OK if report.ok and all(r.ok for r in remote) else EXIT_FAILED


def _render_rebuild(report: RebuildReport, catalog_where: str) -> str:
    lines = [
        f"catalog {catalog_where} rebuilt from {report.manifests} manifests in {report.location}",
        f"  {len(report.added)} backups added, {len(report.refreshed)} refreshed, "
        f"{len(report.marked_deleted)} marked deleted (their backup is gone from storage)",
    ]
    lines += [f"  deleted: {backup_id[:8]}" for backup_id in report.marked_deleted]
    for target, problems in problems_by_target(report.problems):
        lines.append(f"{target}:")
        lines += [f"  {p.severity}: {p.message}" for p in problems]
    return "\n".join(lines)
