"""``pgwarden migrate check [TARGET]`` and ``pgwarden migrate upgrade TARGET [--dry-run]``.

``check`` runs the forward-only guard for one target, or for every target with
``[targets.migrations] project`` set, and records the migrations it sees applied in the ledger;
it exits 1 when any target has a policy error (warnings do not fail it).  ``upgrade`` is
:func:`pgwarden.migrate.safe_migrate`: guard, pre-migration backup, the application's own
``alembic upgrade head``; ``--dry-run`` prints the plan (the guard's result, the backup it
would take, the exact command with the password shown as ``***``) and changes nothing.
There is no ``downgrade``: to undo a migration, write a new one.

Exit codes (DESIGN.md): 0 success, 1 a policy error or a failed migration, 2 usage or
configuration error.
"""

from __future__ import annotations

import argparse
import json

from pgwarden.commands.context import command_env
from pgwarden.config import Config, TargetConfig
from pgwarden.errors import EXIT_FAILED, EXIT_OK, BusyError, PgwardenError
from pgwarden.migrate import (
    GuardReport,
    LedgerStore,
    MigrateOutcome,
    MigrateStatus,
    MigrationFailed,
    MigrationRefused,
    inspect_project,
    locate,
    safe_migrate,
)
from pgwarden.pg.conninfo import ConnSpec

__all__ = ["cmd_migrate", "render_outcome", "render_report"]

#: how long ``check`` waits for a running upgrade's lock before checking without recording
CHECK_LOCK_WAIT_S = 2.0


def cmd_migrate(args: argparse.Namespace) -> int:
    """``pgwarden migrate check|upgrade`` (``args.action``)."""
    if args.action == "check":
        return _check(args)
    return _upgrade(args)


# -- check ------------------------------------------------------------------------------------


def _check(args: argparse.Namespace) -> int:
    with command_env(args) as env:
        config = env.config
        if args.target:
            targets = [config.target(args.target)]
        else:
            targets = [t for t in config.targets if t.migrations.project is not None]
        results: list[tuple[str, GuardReport | str]] = []  # a report, or why there is none
        code = EXIT_OK
        for target in targets:
            try:
                report = _inspect(config, target)
            except PgwardenError as exc:
                if args.target:
                    raise
                results.append((target.name, str(exc)))
                code = max(code, exc.exit_code)
                continue
            results.append((target.name, report))
            if not report.ok:
                code = max(code, EXIT_FAILED)
    if args.json:
        docs = [
            r.as_dict() if isinstance(r, GuardReport) else {"target": n, "ok": False, "error": r}
            for n, r in results
        ]
        print(json.dumps(docs, indent=2))
        return code
    if not targets:
        print("no target has [targets.migrations] project set: nothing to check")
    for name, result in results:
        print(
            render_report(result) if isinstance(result, GuardReport) else f"{name}: ERROR {result}"
        )
    return code


def _inspect(config: Config, target: TargetConfig) -> GuardReport:
    project = locate(config, target)
    store = LedgerStore(config.daemon.state_dir, target.name)
    spec = ConnSpec.from_target(target)
    numbered = target.migrations.require_numbered
    try:
        with store.lock(timeout=CHECK_LOCK_WAIT_S):
            return inspect_project(project, store, spec, require_numbered=numbered, record=True)
    except BusyError:
        # an upgrade holds the lock (perhaps for a long migration): look without recording
        return inspect_project(project, store, spec, require_numbered=numbered, record=False)


def _revisions(revs: tuple[str, ...]) -> str:
    return ", ".join(revs) if revs else "no revision (alembic_version absent)"


def render_report(report: GuardReport) -> str:
    """The human form of a guard report."""
    head = ", ".join(report.heads) or "-"
    lines = [
        f"{report.target}: {len(report.files)} migration file(s) in {', '.join(report.versions)}",
        f"  database at {_revisions(report.database)}; head {head}; "
        f"{len(report.pending)} pending"
        + (
            ": " + ", ".join(f"{p.revision} ({p.file})" for p in report.pending)
            if report.pending
            else ""
        ),
        f"  ledger {report.ledger}: {report.released} released file(s)"
        + (f", recorded now: {', '.join(report.recorded)}" if report.recorded else ""),
    ]
    for problem in report.problems:
        tag = "ERROR  " if problem.severity == "error" else "warning"
        lines.append(f"  {tag} {problem.code}: {problem.message}")
    verdict = "ok" if report.ok else "FAILED"
    lines.append(f"  {verdict}: {len(report.errors)} error(s), {len(report.warnings)} warning(s)")
    return "\n".join(lines)


# -- upgrade ----------------------------------------------------------------------------------


def _upgrade(args: argparse.Namespace) -> int:
    with command_env(args) as env:
        target = env.config.target(args.target)
        try:
            outcome = safe_migrate(
                target, env.config, env.catalog, env.storage, dry_run=args.dry_run
            )
        except MigrationRefused as exc:
            if args.json:
                print(
                    json.dumps(
                        {
                            "target": target.name,
                            "status": MigrateStatus.REFUSED,
                            "ok": False,
                            "guard": exc.report.as_dict(),
                        },
                        indent=2,
                    )
                )
            else:
                print(render_report(exc.report))
                print(
                    f"refused: the guard found {len(exc.report.errors)} error(s); nothing "
                    "was backed up or migrated"
                )
            return EXIT_FAILED
        except MigrationFailed as exc:
            if args.json:
                print(json.dumps(exc.outcome.as_dict(), indent=2))
            else:
                print(render_outcome(exc.outcome))
            return EXIT_FAILED
    if args.json:
        print(json.dumps(outcome.as_dict(), indent=2))
    else:
        print(render_outcome(outcome))
    return EXIT_OK if outcome.ok else EXIT_FAILED


def render_outcome(outcome: MigrateOutcome) -> str:
    """The human form of a migration outcome or plan."""
    before = ", ".join(outcome.revision_before) or "(none)"
    after = ", ".join(outcome.revision_after) or "(none)"
    applied = ", ".join(outcome.applied) or "nothing"
    name = outcome.target
    if outcome.status == MigrateStatus.PLANNED:
        lines = [
            f"plan for {name} (dry run: nothing is backed up, run or recorded)",
            render_report(outcome.report),
            f"  would apply: {applied} ({before} -> {after})",
            f"  backup: {outcome.backup_plan}",
            f"  command: {outcome.command.shell_line()}",
            f"  timeout: {outcome.command.timeout:g} s",
        ]
        if outcome.report.errors:
            lines.append("  the guard would refuse this upgrade")
        return "\n".join(lines)
    if outcome.status == MigrateStatus.UP_TO_DATE:
        return f"{name}: up to date at {before}; nothing to migrate, no backup taken"
    backup = (
        f"pre-migration backup {outcome.backup_id[:8]} ({outcome.backup_path}), kept at "
        "least 7 days"
        if outcome.backup_id
        else "no pre-migration backup (backup_before = false)"
    )
    if outcome.status == MigrateStatus.MIGRATED:
        return (
            f"{name}: migrated {before} -> {after} in {outcome.duration_s:.1f} s "
            f"(applied {applied}); {backup}"
        )
    lines = [
        f"{name}: migration FAILED: {outcome.error}",
        f"  database was at {before}, is now at {after} (applied: {applied})",
        f"  {backup}",
    ]
    if outcome.stderr_tail:
        lines.append("  alembic stderr (last lines):")
        lines.extend(f"    {line}" for line in outcome.stderr_tail.splitlines())
    lines.append(
        "  fix forward: correct the failing migration (it was not applied) and run "
        "pgwarden migrate upgrade again"
    )
    return "\n".join(lines)
