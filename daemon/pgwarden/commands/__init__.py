"""Handlers of the ``pgwarden`` subcommands, one module per group; each returns an exit code."""

from pgwarden.commands.backup_cmd import (
    cmd_backup,
    cmd_backups,
    cmd_catalog,
    cmd_pin,
    cmd_prune,
    cmd_restore,
    cmd_verify,
)
from pgwarden.commands.check_cmd import cmd_check
from pgwarden.commands.config_cmd import cmd_config
from pgwarden.commands.daemon_cmd import cmd_demo, cmd_run

__all__ = [
    "cmd_backup",
    "cmd_backups",
    "cmd_catalog",
    "cmd_check",
    "cmd_config",
    "cmd_demo",
    "cmd_pin",
    "cmd_prune",
    "cmd_restore",
    "cmd_run",
    "cmd_verify",
]
