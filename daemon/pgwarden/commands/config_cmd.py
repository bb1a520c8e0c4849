"""``pgwarden config init | check | show | roles``.

``roles`` prints the SQL that creates pgwarden's least-privilege roles for every target (or
one), built from the configuration alone by :mod:`pgwarden.pg.roles`: no server is contacted,
so the grants follow ``--server-version`` (default: PostgreSQL 14 or newer).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from pgwarden import config as config_mod
from pgwarden.config import render as config_render
from pgwarden.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, ConfigError, UsageError
from pgwarden.pg import roles


def cmd_config(args: argparse.Namespace) -> int:
    if args.action == "init":
        return _init(args)
    path = args.config or config_mod.default_path()
    try:
        config = config_mod.load(path)
    except ConfigError as exc:
        if getattr(args, "json", False):
            print(json.dumps({"ok": False, "file": exc.file, "problems": list(exc.problems)}))
        else:
            count = len(exc.problems)
            sys.stderr.write(f"{exc.file}: {count} problem{'s' if count != 1 else ''}\n")
            for problem in exc.problems:
                sys.stderr.write(f"  {exc.file}: {problem}\n")
        return EXIT_USAGE
    if args.action == "roles":
        return _roles(config, args)
    if args.action == "check":
        if args.json:
            print(json.dumps({"ok": True, "file": str(path), "targets": len(config.targets)}))
        else:
            names = ", ".join(t.name for t in config.targets) or "none"
            print(f"{path}: OK ({len(config.targets)} targets: {names})")
        return EXIT_OK
    if args.json:
        print(json.dumps(config_render.effective_dict(config), indent=2, default=str))
    else:
        sys.stdout.write(config_render.render_effective(config))
    return EXIT_OK


def _roles(config: config_mod.Config, args: argparse.Namespace) -> int:
    major = args.server_version
    if major < roles.MIN_SERVER_MAJOR:
        raise UsageError(
            f"--server-version {major}: pgwarden's roles need PostgreSQL "
            f"{roles.MIN_SERVER_MAJOR} or newer (pg_monitor)"
        )
    targets = [config.target(args.target)] if args.target else list(config.targets)
    if not targets:
        raise UsageError(f"{config.source}: no targets configured")
    scripts = roles.role_scripts(targets, major)
    if args.json:
        print(json.dumps([s.as_dict() for s in scripts], indent=2))
    else:
        sys.stdout.write(roles.render_sql(scripts, major))
    return EXIT_OK


def _init(args: argparse.Namespace) -> int:
    text = config_render.starter_config()
    if args.config is None:
        sys.stdout.write(text)
        return EXIT_OK
    path = args.config
    if path.exists() and not args.force:
        sys.stderr.write(f"pgwarden: {path} exists; use --force to overwrite it\n")
        return EXIT_USAGE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        fd = os.open(path, flags, 0o640)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(path, 0o640)
    except OSError as exc:
        sys.stderr.write(f"pgwarden: cannot write {path}: {exc.strerror}\n")
        return EXIT_FAILED
    print(f"wrote {path}; edit it, then run: pgwarden config check -c {path}")
    return EXIT_OK
