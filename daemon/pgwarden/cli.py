"""The ``pgwarden`` command line: argument parsing only.

Each subcommand maps to one handler in :mod:`pgwarden.commands` (or :mod:`pgwarden.control`
for ``ctl``); handlers return the exit code.  Exit codes (DESIGN.md): 0 success, 1 the
operation failed (a failed check included), 2 usage or configuration error, 3 the daemon
cannot be reached.  Every :class:`~pgwarden.errors.PgwardenError` is printed as one clear
message on stderr, without a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pgwarden
from pgwarden.errors import EXIT_FAILED, EXIT_USAGE, PgwardenError

Handler = Callable[[argparse.Namespace], int]


def _resolve(spec: str) -> Handler:
    """Import a handler given as ``module:function`` only when its command runs."""
    import importlib

    module, _, name = spec.partition(":")
    handler: Handler = getattr(importlib.import_module(module), name)
    return handler


class _Parser(argparse.ArgumentParser):
    """argparse with exit code 2 and a one-line hint, as DESIGN.md's contract says."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write(f"pgwarden: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


def _config_opt(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-c",
        "--config",
        type=Path,
        default=None,
        help="config file (default: $PGWARDEN_CONFIG or /etc/pgwarden/pgwarden.toml)",
    )


def _json_opt(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")


class _VersionAction(argparse.Action):
    """``--version``: the version is looked up only when asked for (it costs an import)."""

    def __call__(self, parser: argparse.ArgumentParser, *_args: object, **_kw: object) -> None:
        sys.stdout.write(f"pgwarden {pgwarden.__version__}\n")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    from pgwarden.control import ctl_cli

    c = "pgwarden.commands."
    parser = _Parser(prog="pgwarden", description="Keeps a VPS's PostgreSQL safe and observable.")
    parser.add_argument(
        "--version", action=_VersionAction, nargs=0, help="show the version and exit"
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def add(name: str, handler: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    p = add("run", c + "daemon_cmd:cmd_run", "run the daemon in the foreground")
    _config_opt(p)

    p = add("demo", c + "daemon_cmd:cmd_demo", "embedded PostgreSQL + sample data + the daemon")
    p.add_argument("--dir", type=Path, default=None, help="working folder (default: a temp dir)")
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop after this many seconds (default: until Ctrl-C)",
    )

    p = add("config", c + "config_cmd:cmd_config", "check, show or create a configuration")
    p.add_argument("action", choices=["init", "check", "show"])
    _config_opt(p)
    p.add_argument("--force", action="store_true", help="init: overwrite an existing file")
    _json_opt(p)

    p = add("backup", c + "backup_cmd:cmd_backup", "take a backup now (no daemon needed)")
    _config_opt(p)
    p.add_argument("target")
    p.add_argument("--tag", action="append", default=[], help="extra tag (e.g. pre-migration)")
    _json_opt(p)

    p = add(
        "verify", c + "restore_cmd:cmd_verify", "restore drill of a backup into a scratch database"
    )
    _config_opt(p)
    p.add_argument("target")
    p.add_argument("backup", nargs="?", help="backup id or prefix (default: newest)")
    _json_opt(p)

    p = add(
        "prune", c + "retention_cmd:cmd_prune", "apply retention (or show the plan with --dry-run)"
    )
    _config_opt(p)
    p.add_argument("target", nargs="?")
    p.add_argument("--dry-run", action="store_true")
    _json_opt(p)

    p = add("restore", c + "restore_cmd:cmd_restore", "restore a backup into a new database")
    _config_opt(p)
    p.add_argument("target")
    p.add_argument("backup", nargs="?", help="backup id or prefix (default: newest)")
    p.add_argument("--into", required=True, metavar="DBNAME")
    p.add_argument("--force", action="store_true", help="restore into a non-empty database")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.add_argument("--verify", action="store_true", help="run the drill checks afterwards")
    _json_opt(p)

    p = add("backups", c + "backup_cmd:cmd_backups", "list backups, newest first")
    _config_opt(p)
    p.add_argument("target", nargs="?")
    _json_opt(p)

    for name, pin in (("pin", True), ("unpin", False)):
        p = add(
            name, c + "retention_cmd:cmd_pin", f"{name} a backup (pinned backups are never pruned)"
        )
        _config_opt(p)
        p.add_argument("target")
        p.add_argument("backup")
        p.set_defaults(pin=pin)
        _json_opt(p)

    p = add("catalog", c + "retention_cmd:cmd_catalog", "catalog maintenance")
    p.add_argument("action", choices=["rebuild"])
    _config_opt(p)
    _json_opt(p)

    p = add("check", c + "check_cmd:cmd_check", "production checklist, pgvector and pool report")
    _config_opt(p)
    p.add_argument("target", nargs="?")
    _json_opt(p)

    p = add(
        "migrate",
        c + "migrate_cmd:cmd_migrate",
        "forward-only guard and safe upgrade of a target's Alembic migrations",
    )
    actions = p.add_subparsers(dest="action", required=True, parser_class=_Parser)
    m = actions.add_parser("check", help="check the migration policy (exit 1 on an error)")
    _config_opt(m)
    m.add_argument("target", nargs="?", help="default: every target with migrations configured")
    _json_opt(m)
    m = actions.add_parser(
        "upgrade", help="pre-migration backup, then alembic upgrade head (no downgrade exists)"
    )
    _config_opt(m)
    m.add_argument("target")
    m.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    _json_opt(m)

    p = sub.add_parser("ctl", help="talk to the running daemon over its control socket")
    ctl_cli.configure_parser(p)
    return parser


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


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
