"""The ``pgwarden`` command line: argument parsing only.

Each subcommand maps to one handler in :mod:`pgwarden.commands` (or :mod:`pgwarden.control`
for ``ctl``); handlers return the exit code.  Exit codes (DESIGN.md): 0 success, 1 the
operation failed (a failed check included), 2 usage or configuration error, 3 the daemon
cannot be reached.  Every :class:`~pgwarden.errors.PgwardenError` is printed as one clear
message on stderr, without a traceback.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pgwarden
from pgwarden.control import ctl_cli
from pgwarden.errors import EXIT_FAILED, EXIT_USAGE, PgwardenError

Handler = Callable[[argparse.Namespace], int]
_COMMANDS_PACKAGE = "pgwarden.commands."


def _resolve(spec: str) -> Handler:
    """Import a handler given as ``module:function`` only when its command runs: a handler
    module pulls in psycopg and SQLAlchemy (0.39 s measured), ``pgwarden ctl`` and ``--help``
    need neither."""
    module, _, name = spec.partition(":")
    handler: Handler = getattr(importlib.import_module(module), name)
    return handler


class _Parser(argparse.ArgumentParser):
    """argparse with exit code 2 and a one-line hint, as DESIGN.md's contract says."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write(f"pgwarden: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


#: an argument: ``add_argument``'s flags (or name) and keywords
_Arg = tuple[tuple[str, ...], dict[str, Any]]


class _Command(NamedTuple):
    """One subcommand: its name, help text, arguments in order, and handler.

    ``handler`` is ``module:function`` under :mod:`pgwarden.commands`, imported only when the
    command runs; ``None`` for an action whose parent's handler dispatches on ``action``.
    """

    name: str
    help: str
    args: tuple[_Arg, ...] = ()
    handler: str | None = None
    defaults: tuple[tuple[str, object], ...] = ()
    actions: tuple[_Command, ...] = ()  # sub-actions, parsed into ``args.action``


_CONFIG: _Arg = (
    ("-c", "--config"),
    {
        "type": Path,
        "default": None,
        "help": "config file (default: $PGWARDEN_CONFIG or /etc/pgwarden/pgwarden.toml)",
    },
)
_JSON: _Arg = (("--json",), {"action": "store_true", "help": "machine-readable output"})
_TARGET: _Arg = (("target",), {})
_ANY_TARGET: _Arg = (("target",), {"nargs": "?"})
_BACKUP_OR_NEWEST: _Arg = (
    ("backup",),
    {"nargs": "?", "help": "backup id or prefix (default: newest)"},
)
#: reading a backup's off-site copy (restore, verify)
_FROM: _Arg = (
    ("--from",),
    {"dest": "source", "metavar": "DESTINATION", "help": "read the copy on this [[offsite]]"},
)
_IDENTITY: _Arg = (
    ("--identity",),
    {"type": Path, "metavar": "FILE", "help": "age identity file for an encrypted copy"},
)
_IDENTITY_CREDENTIAL: _Arg = (
    ("--identity-credential",),
    {"metavar": "NAME", "help": "the age identity is systemd credential NAME"},
)


def _pin_command(name: str, pin: bool) -> _Command:
    return _Command(
        name,
        f"{name} a backup (pinned backups are never pruned)",
        (_CONFIG, _TARGET, (("backup",), {}), _JSON),
        "retention_cmd:cmd_pin",
        defaults=(("pin", pin),),
    )


_MIGRATE_ACTIONS = (
    _Command(
        "check",
        "check the migration policy (exit 1 on an error)",
        (
            _CONFIG,
            (
                ("target",),
                {"nargs": "?", "help": "default: every target with migrations configured"},
            ),
            _JSON,
        ),
    ),
    _Command(
        "upgrade",
        "pre-migration backup, then alembic upgrade head (no downgrade exists)",
        (
            _CONFIG,
            _TARGET,
            (("--dry-run",), {"action": "store_true", "help": "print the plan, change nothing"}),
            _JSON,
        ),
    ),
)

_CONFIG_ACTIONS = (
    _Command(
        "init",
        "write a commented starter file (to stdout without -c)",
        (
            _CONFIG,
            (("--force",), {"action": "store_true", "help": "overwrite an existing file"}),
        ),
    ),
    _Command("check", "validate the configuration (exit 2 on a problem)", (_CONFIG, _JSON)),
    _Command("show", "the effective configuration, secrets hidden", (_CONFIG, _JSON)),
    _Command(
        "roles",
        "print the SQL that creates pgwarden's least-privilege roles (no server contacted)",
        (
            _CONFIG,
            (("target",), {"nargs": "?", "help": "default: every target"}),
            (
                ("--server-version",),
                {
                    "type": int,
                    "default": 14,
                    "metavar": "N",
                    "help": "the servers' major version; grants differ before 14 "
                    "(default: 14, i.e. any 14 or newer; 18 adds large-object defaults)",
                },
            ),
            _JSON,
        ),
    ),
)

_OFFSITE_ACTIONS = (
    _Command(
        "sync",
        "upload every backup a destination misses, then apply its retention (no daemon needed)",
        (
            _CONFIG,
            (("target",), {"nargs": "?", "help": "default: every target with a destination"}),
            (("--destination",), {"metavar": "NAME", "help": "only this [[offsite]] destination"}),
            _JSON,
        ),
    ),
    _Command("list", "the off-site copies the catalog records", (_CONFIG, _ANY_TARGET, _JSON)),
)

#: every subcommand but ``ctl`` (configured by :mod:`pgwarden.control.ctl_cli`), in help order
_COMMANDS = (
    _Command("run", "run the daemon in the foreground", (_CONFIG,), "daemon_cmd:cmd_run"),
    _Command(
        "demo",
        "embedded PostgreSQL + sample data + the daemon",
        (
            (
                ("--dir",),
                {"type": Path, "default": None, "help": "working folder (default: a temp dir)"},
            ),
            (
                ("--duration",),
                {
                    "type": float,
                    "default": None,
                    "help": "stop after this many seconds (default: until Ctrl-C)",
                },
            ),
        ),
        "daemon_cmd:cmd_demo",
    ),
    _Command(
        "config",
        "check, show or create a configuration; print the SQL for pgwarden's roles",
        handler="config_cmd:cmd_config",
        actions=_CONFIG_ACTIONS,
    ),
    _Command(
        "backup",
        "take a backup now (no daemon needed)",
        (
            _CONFIG,
            _TARGET,
            (
                ("--tag",),
                {"action": "append", "default": [], "help": "extra tag (e.g. pre-migration)"},
            ),
            (
                ("--priority",),
                {
                    "choices": ctl_cli.RUN_PRIORITIES,
                    "help": "CPU/I/O priority of pg_dump and the stages (default: the target's"
                    " [targets.backup] priority; its auto is normal here)",
                },
            ),
            (
                ("--max-rate",),
                {
                    "metavar": "SIZE",
                    "help": "read pg_dump's output at most SIZE per second, e.g. 40MB or 40MiB;"
                    " 0: no cap (default: the target's [targets.backup] max_rate)",
                },
            ),
            _JSON,
        ),
        "backup_cmd:cmd_backup",
    ),
    _Command(
        "verify",
        "restore drill of a backup into a scratch database",
        (_CONFIG, _TARGET, _BACKUP_OR_NEWEST, _FROM, _IDENTITY, _IDENTITY_CREDENTIAL, _JSON),
        "restore_cmd:cmd_verify",
    ),
    _Command(
        "prune",
        "apply retention (or show the plan with --dry-run)",
        (_CONFIG, _ANY_TARGET, (("--dry-run",), {"action": "store_true"}), _JSON),
        "retention_cmd:cmd_prune",
    ),
    _Command(
        "restore",
        "restore a backup into a new database",
        (
            _CONFIG,
            _TARGET,
            _BACKUP_OR_NEWEST,
            (("--into",), {"required": True, "metavar": "DBNAME"}),
            (("--force",), {"action": "store_true", "help": "restore into a non-empty database"}),
            (("--dry-run",), {"action": "store_true", "help": "print the commands, run nothing"}),
            (("--verify",), {"action": "store_true", "help": "run the drill checks afterwards"}),
            _FROM,
            _IDENTITY,
            _IDENTITY_CREDENTIAL,
            _JSON,
        ),
        "restore_cmd:cmd_restore",
    ),
    _Command(
        "backups",
        "list backups, newest first",
        (_CONFIG, _ANY_TARGET, _JSON),
        "backup_cmd:cmd_backups",
    ),
    _Command(
        "offsite",
        "off-site copies: upload what is missing now, list the copies",
        handler="offsite_cmd:cmd_offsite",
        actions=_OFFSITE_ACTIONS,
    ),
    _pin_command("pin", True),
    _pin_command("unpin", False),
    _Command(
        "catalog",
        "catalog maintenance",
        ((("action",), {"choices": ["rebuild"]}), _CONFIG, _JSON),
        "retention_cmd:cmd_catalog",
    ),
    _Command(
        "check",
        "production checklist, pgvector and pool report",
        (_CONFIG, _ANY_TARGET, _JSON),
        "check_cmd:cmd_check",
    ),
    _Command(
        "notify",
        "notifications: send a test message to a [[notify]] destination",
        handler="notify_cmd:cmd_notify",
        actions=(
            _Command(
                "test",
                "send a test message now (exit 1 if it was not delivered)",
                (_CONFIG, (("name",), {"nargs": "?", "help": "default: every one"}), _JSON),
            ),
        ),
    ),
    _Command(
        "migrate",
        "forward-only guard and safe upgrade of a target's Alembic migrations",
        handler="migrate_cmd:cmd_migrate",
        actions=_MIGRATE_ACTIONS,
    ),
)


class _VersionAction(argparse.Action):
    """``--version``: the version is looked up only when asked for (it costs an import)."""

    def __call__(self, parser: argparse.ArgumentParser, *_args: object, **_kw: object) -> None:
        sys.stdout.write(f"pgwarden {pgwarden.__version__}\n")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pgwarden", description="Keeps a VPS's PostgreSQL safe and observable.")
    parser.add_argument(
        "--version", action=_VersionAction, nargs=0, help="show the version and exit"
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for command in _COMMANDS:
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        _configure(p, command)
    ctl_cli.configure_parser(
        sub.add_parser("ctl", help="talk to the running daemon over its control socket")
    )
    return parser


def _configure(p: argparse.ArgumentParser, command: _Command) -> None:
    if command.handler is not None:
        p.set_defaults(handler=_COMMANDS_PACKAGE + command.handler)
    p.set_defaults(**dict(command.defaults))
    for flags, options in command.args:
        p.add_argument(*flags, **options)
    if command.actions:
        actions = p.add_subparsers(dest="action", required=True, parser_class=_Parser)
        for action in command.actions:
            _configure(actions.add_parser(action.name, help=action.help), action)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        handler = args.handler if callable(args.handler) else _resolve(args.handler)
        return int(handler(args))
    except PgwardenError as exc:
        sys.stderr.write(f"pgwarden: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("pgwarden: interrupted\n")
        return EXIT_FAILED
    except BrokenPipeError:
        return EXIT_FAILED


def console() -> int:
    """The ``pgwarden`` command (and ``python -m pgwarden.cli``): :func:`main`, then the
    process exits.  What the command made is frozen out of the garbage collector first:
    the interpreter's last full collection over every object of the imports (SQLAlchemy,
    psycopg...) took 0.10-0.16 s at every command's exit, for memory the exit frees anyway.
    ``atexit`` handlers still run and the standard streams are still flushed; only reference
    cycles left at exit are not collected (every resource pgwarden opens is closed by a
    ``with`` block before this).  Not in :func:`main`: tests call it in one process."""
    code = main()
    gc.freeze()
    return code


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(console())
