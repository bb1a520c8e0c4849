"""``pgwarden verify TARGET [BACKUP]`` (a restore drill now) and ``pgwarden restore``.

Both run in this process, without the daemon.  Both read a backup's off-site copy when the
local storage does not hold it, or with ``--from DESTINATION``
(:mod:`pgwarden.restore.remote_locate`): downloaded, checksum first, decrypted with the
identity of ``--identity FILE`` or ``--identity-credential NAME``, before any database is
touched.  SIGTERM or Ctrl-C cancels cleanly: the running
tool is stopped, the scratch database dropped, the drill recorded as interrupted; a second
Ctrl-C interrupts at once.  Exit codes: 0 passed, 1 a check or the restore failed, 2 usage
(a non-empty ``--into`` database without ``--force`` included).
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from types import FrameType

from pgwarden.catalog import Catalog
from pgwarden.commands.context import command_env
from pgwarden.config import TargetConfig
from pgwarden.errors import EXIT_FAILED, EXIT_OK, UsageError
from pgwarden.restore.drill import VerifyRequest, run_verification
from pgwarden.restore.outcome import CheckResult, VerifyOutcome
from pgwarden.restore.real import RestoreOutcome, RestoreRequest, restore_backup
from pgwarden.restore.remote_locate import OffsiteChoice, Source, open_source
from pgwarden.retention.subtargets import next_drill


@contextmanager
def _cancel_on_signals() -> Iterator[threading.Event]:
    """An event set by the first SIGTERM/SIGINT; the handlers only set it (no exit here)."""
    cancel = threading.Event()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def handler(signum: int, _frame: FrameType | None) -> None:
        cancel.set()
        signal.signal(signum, previous[signal.Signals(signum)])  # the second one is not polite

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield cancel
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _check_lines(checks: Sequence[CheckResult]) -> list[str]:
    lines = []
    for check in checks:
        mark = "ok" if check.passed else "FAILED"
        lines.append(f"  {mark:<7} {check.name:<22} {check.detail}")
        for failure in check.failures:
            lines.append(
                f"            {failure['item']}: expected {failure['expected']!r}, "
                f"got {failure['actual']!r}"
            )
        if check.more_failures:
            lines.append(f"            ... and {check.more_failures} more")
        if not check.passed and isinstance(check.actual, list) and check.name == "restore":
            lines.extend(f"            {line}" for line in check.actual[:10])
    return lines


def _drill_text(outcome: VerifyOutcome) -> list[str]:
    verdict = outcome.status.upper()
    lines = [
        f"restore drill of backup {outcome.backup_id[:8]} ({outcome.artifact}) of "
        f"{outcome.target}: {verdict} in {outcome.duration_s:.1f} s"
    ]
    if outcome.restore_mode:
        lines.append(
            f"  restored on {outcome.server} into {outcome.scratch_database} "
            f"({outcome.restore_mode}), dropped afterwards"
        )
    lines.extend(_check_lines(outcome.checks))
    lines.extend(f"  note: {note}" for note in outcome.notes)
    for older in outcome.older:
        lines.append("")
        lines.extend(_drill_text(older))
    return lines


def _choice(args: argparse.Namespace) -> OffsiteChoice:
    return OffsiteChoice(args.source, args.identity, args.identity_credential)


def _fetched_note(source: Source) -> str | None:
    """What the text says of an off-site copy read instead of the local file."""
    if source.remote is None:
        return None
    how = ", decrypted with age" if source.remote.offsite.encrypted else ""
    return (
        f"read from the off-site copy on {source.remote.describe()}{how}; the object's and "
        "the artifact's sha256 matched the manifest before anything was restored"
    )


def _next_drill(target: TargetConfig, catalog: Catalog) -> TargetConfig:
    chosen = next_drill(target, catalog)
    if chosen is None:
        raise UsageError(f"no database of {target.name} has a backup yet (pgwarden backup first)")
    return chosen


def cmd_verify(args: argparse.Namespace) -> int:
    with _cancel_on_signals() as cancel, command_env(args) as env:
        target = env.config.target(args.target)
        if target.whole_server:  # the drill rotation's next database, as the daemon's
            target = _next_drill(target, env.catalog)
        request = VerifyRequest(
            target,
            env.config,
            env.catalog,
            env.storage,
            backup_ref=args.backup,
            cancel=cancel,
            raise_on_failure=False,
        )
        with open_source(
            env.config, env.catalog, env.storage, target, args.backup, _choice(args),
            cancel=cancel,
        ) as source:  # fmt: skip
            if source.remote is None:  # a local backup: as the daemon's drills (random older)
                outcome = run_verification(request)
            else:
                outcome = run_verification(replace(request, located=source.located))
        note = _fetched_note(source)
        if note is not None:
            outcome = replace(
                outcome, artifact=source.located.manifest.path, notes=(*outcome.notes, note)
            )
    if args.json:
        print(json.dumps(outcome.as_dict(), indent=2, default=str))
    else:
        print("\n".join(_drill_text(outcome)))
    return EXIT_OK if outcome.passed else EXIT_FAILED


def _restore_text(outcome: RestoreOutcome) -> list[str]:
    if outcome.dry_run:
        state = "to be created"
        if outcome.contents:  # only with --force: otherwise the dry run is refused
            state = (
                f"exists, holds {outcome.contents}; --force: its objects named like the "
                "backup's are replaced, the others kept"
            )
        elif outcome.existed:
            state = "exists, empty"
        lines = [
            f"# restore of backup {outcome.backup_id[:8]} ({outcome.artifact}) into "
            f"{outcome.database} on {outcome.server} ({state}); nothing was run"
        ]
        return lines + outcome.commands
    verdict = "done" if outcome.passed else "FAILED"
    lines = [
        f"restore of backup {outcome.backup_id[:8]} ({outcome.artifact}) into "
        f"{outcome.database} on {outcome.server}: {verdict} in {outcome.duration_s:.1f} s"
    ]
    lines.extend(_check_lines(outcome.checks))
    lines.extend(f"  note: {note}" for note in outcome.notes)
    return lines


def cmd_restore(args: argparse.Namespace) -> int:
    with _cancel_on_signals() as cancel, command_env(args) as env:
        target = env.config.target(args.target)
        if target.whole_server:
            raise UsageError(
                f"{target.name} covers a whole server: name a database, {target.name}/DB"
            )
        with open_source(
            env.config, env.catalog, env.storage, target, args.backup, _choice(args),
            fetch_copy=not args.dry_run, cancel=cancel,
        ) as source:  # fmt: skip
            outcome = restore_backup(
                RestoreRequest(
                    target,
                    env.config,
                    env.catalog,
                    env.storage,
                    into=args.into,
                    backup_ref=args.backup,
                    force=args.force,
                    dry_run=args.dry_run,
                    verify=args.verify,
                    cancel=cancel,
                    located=source.located,
                )
            )
    if source.remote is not None:
        outcome.artifact = source.located.manifest.path
        if args.dry_run:
            how = ", decrypts it with the identity," if source.remote.offsite.encrypted else ""
            outcome.commands.insert(
                0,
                f"# pgwarden first downloads the copy on {source.remote.describe()}{how} into "
                f"a private spool in {source.located.artifact.parent}/ (checksum first; "
                "removed afterwards); the commands below read that file",
            )
        else:
            outcome.notes.append(_fetched_note(source) or "")
    if args.json:
        print(json.dumps(outcome.as_dict(), indent=2, default=str))
    else:
        print("\n".join(_restore_text(outcome)))
    return EXIT_OK if outcome.passed else EXIT_FAILED
