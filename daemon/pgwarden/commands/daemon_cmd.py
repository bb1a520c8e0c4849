"""``pgwarden run`` (the daemon in the foreground) and ``pgwarden demo``."""

from __future__ import annotations

import argparse

from pgwarden import config as config_mod
from pgwarden.commands.demo import run_demo
from pgwarden.service.daemon import Daemon


def cmd_run(args: argparse.Namespace) -> int:
    path = args.config or config_mod.default_path()
    return Daemon(path).run()


def cmd_demo(args: argparse.Namespace) -> int:
    return run_demo(args.dir, args.duration)
